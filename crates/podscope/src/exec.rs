//! `podscope exec`: run a host tool (tcpdump, ss, ip, ...) inside a pod's namespaces.
//!
//! Two processes per pod. `setns` changes the calling thread, and joining a
//! mount namespace is refused to a thread that shares its filesystem state, so
//! it must never run where an async runtime or reader threads live. The parent
//! ([`run`]) finds the pods, then starts `podscope __nsenter --target PID --ns
//! LIST -- CMD...` for each. That child ([`nsenter`]), a fresh single-threaded
//! process, opens the namespaces, joins them and becomes the command; with
//! `pid`, whose namespace only applies to children, it starts the command,
//! forwards signals to it and passes its exit code on.
//!
//! Exit codes follow timeout(1) and env(1): the tool's own code, 128+N when
//! signal N killed it, 124 when --timeout stopped it, 125 when podscope could
//! not join the namespaces, 126 when the command cannot be run, 127 when it
//! does not exist.

use std::collections::HashMap;
use std::ffi::CString;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sched::{setns, CloneFlags};
use nix::sys::signal::{kill, SigSet, Signal};
use nix::sys::signalfd::{siginfo, SfdFlags, SignalFd};
use nix::unistd::{execvp, Pid};
use podscope_runtime::{Container, Pod};

use crate::cli::{ExecArgs, NsenterArgs};
use podscope_pipeline::PodSelection;

/// Exit code when --timeout stopped the tool, as timeout(1).
const EXIT_TIMEOUT: i32 = 124;
/// Exit code when podscope itself failed in the child (joining namespaces), as env(1).
const EXIT_CANNOT_ENTER: i32 = 125;
/// Exit code when the command exists but cannot be run, as the shell.
const EXIT_CANNOT_RUN: i32 = 126;
/// Exit code when the command does not exist, as the shell.
const EXIT_NOT_FOUND: i32 = 127;
/// How long a tool has between SIGTERM and SIGKILL after --timeout.
const KILL_AFTER: Duration = Duration::from_secs(2);
/// `si_code` of a signal the kernel sent itself: a terminal's Ctrl-C (SIGINT),
/// Ctrl-\ (SIGQUIT) or hangup, which go to the whole foreground process group.
const SI_KERNEL: i32 = 0x80;
/// Linux capability number of CAP_SYS_ADMIN, which `setns` needs.
const CAP_SYS_ADMIN: u32 = 21;

// ---------------------------------------------------------------- namespaces

/// A namespace `podscope exec` can join. The declaration order is the order
/// they are joined, as nsenter(1) does: pid before mnt, mnt last.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Ns {
    Cgroup,
    Ipc,
    Uts,
    Net,
    Pid,
    Mnt,
}

impl Ns {
    /// In the order the help text lists them.
    const ALL: [Ns; 6] = [Ns::Net, Ns::Pid, Ns::Mnt, Ns::Uts, Ns::Ipc, Ns::Cgroup];

    /// The name in --ns, which is also the file name under /proc/PID/ns.
    fn name(self) -> &'static str {
        match self {
            Ns::Cgroup => "cgroup",
            Ns::Ipc => "ipc",
            Ns::Uts => "uts",
            Ns::Net => "net",
            Ns::Pid => "pid",
            Ns::Mnt => "mnt",
        }
    }

    fn flag(self) -> CloneFlags {
        match self {
            Ns::Cgroup => CloneFlags::CLONE_NEWCGROUP,
            Ns::Ipc => CloneFlags::CLONE_NEWIPC,
            Ns::Uts => CloneFlags::CLONE_NEWUTS,
            Ns::Net => CloneFlags::CLONE_NEWNET,
            Ns::Pid => CloneFlags::CLONE_NEWPID,
            Ns::Mnt => CloneFlags::CLONE_NEWNS,
        }
    }

    /// Shared by every container of a pod and its pause process, so any of
    /// their pids leads to the same namespace.
    fn pod_wide(self) -> bool {
        matches!(self, Ns::Net | Ns::Uts | Ns::Ipc)
    }

    /// The file under /proc/self/ns to compare a target's namespace with: for
    /// pid, the namespace our children would get.
    fn own_file(self) -> &'static str {
        match self {
            Ns::Pid => "pid_for_children",
            other => other.name(),
        }
    }
}

fn valid_namespaces() -> String {
    Ns::ALL.map(Ns::name).join(", ")
}

/// Parses `net,pid,mnt`: validated, deduplicated, in joining order.
fn parse_namespaces(list: &str) -> Result<Vec<Ns>> {
    let mut out = Vec::new();
    for word in list.split(',').map(str::trim).filter(|w| !w.is_empty()) {
        let lower = word.to_ascii_lowercase();
        let ns = match lower.as_str() {
            "mount" => Some(Ns::Mnt),
            "network" => Some(Ns::Net),
            _ => Ns::ALL.into_iter().find(|n| n.name() == lower),
        };
        match ns {
            Some(ns) => out.push(ns),
            None => bail!(
                "unknown namespace '{word}' in --ns {list}; valid ones: {} (comma-separated)",
                valid_namespaces()
            ),
        }
    }
    if out.is_empty() {
        bail!(
            "--ns is empty; name at least one of: {}",
            valid_namespaces()
        );
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

fn namespace_list(namespaces: &[Ns]) -> String {
    namespaces
        .iter()
        .map(|n| n.name())
        .collect::<Vec<_>>()
        .join(",")
}

/// Whether `file` (an open /proc/PID/ns/* file) is the namespace this process
/// is in already. The host reference is /proc/self, not /proc/1: PID 1 is not
/// always the host's init, nor readable.
fn is_own_namespace(file: &File, ns: Ns) -> bool {
    let own = std::fs::metadata(format!("/proc/self/ns/{}", ns.own_file()));
    match (file.metadata(), own) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

// ---------------------------------------------------------------- parent

/// Where one pod's command runs: the host pid whose namespaces it joins.
#[derive(Debug, Clone)]
struct Target {
    /// `namespace/pod`.
    pod: String,
    /// The log file name stem: `<namespace>_<pod>`.
    file_stem: String,
    /// Host pid of the chosen container's (or the pause) process.
    pid: u32,
}

/// Runs the command in every chosen pod; returns the exit code to use.
pub fn run(args: ExecArgs) -> Result<i32> {
    let namespaces = parse_namespaces(&args.namespaces)?;
    let Some(selection) = PodSelection::from_flags(&args.pods.flags())? else {
        bail!(
            "podscope exec needs a pod: --pod NAME [-n NAMESPACE], or -l SELECTOR for several \
             pods at once (podscope ps -A lists the pods on this node)"
        );
    };
    require_sys_admin()?;

    // Discovery runs (and ends) its own small tokio runtime: done before any
    // signal mask or child, so nothing of it outlives this call.
    let discovery = podscope_runtime::discover_detailed(args.pods.runtime_endpoint.as_deref())?;
    let pods = selection.select(&discovery.pods);
    if pods.is_empty() {
        return Err(selection.no_match(&discovery));
    }

    // One entry per pod, in selection order: its target, or None when skipped.
    let mut plan: Vec<Option<Target>> = Vec::new();
    for pod in &pods {
        match choose_target(pod, selection.container.is_some(), &namespaces) {
            Ok(t) => plan.push(Some(t)),
            Err(e) if pods.len() == 1 => return Err(e),
            Err(e) => {
                eprintln!(
                    "podscope: warning: skipping pod {}: {e:#}",
                    pod.qualified_name()
                );
                plan.push(None);
            }
        }
    }
    let targets: Vec<Target> = plan.iter().flatten().cloned().collect();
    if targets.is_empty() {
        bail!(
            "none of the {} selected pods has a running container to join",
            pods.len()
        );
    }
    if namespaces.contains(&Ns::Net) {
        for t in &targets {
            if shares_host_network(t.pid) {
                eprintln!(
                    "podscope: note: pod {} uses the host's network namespace (hostNetwork): \
                     the tool sees the host's interfaces",
                    t.pod
                );
            }
        }
    }

    let output = match &args.output_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("creating the output directory {}", dir.display()))?;
            Output::Files(dir.clone())
        }
        None if targets.len() == 1 => Output::Inherit,
        None => Output::Prefixed,
    };
    let exe = std::env::current_exe().context("finding podscope's own executable")?;
    let ns_arg = namespace_list(&namespaces);
    let codes = supervise(
        &exe,
        &targets,
        &ns_arg,
        &args.command,
        &output,
        args.timeout,
    )?;

    // The first non-zero code in pod order; a skipped pod counts as 1.
    let mut codes = codes.into_iter();
    let overall = plan
        .iter()
        .map(|p| match p {
            Some(_) => codes.next().unwrap_or(1),
            None => 1,
        })
        .find(|&c| c != 0)
        .unwrap_or(0);
    Ok(overall)
}

/// A hex mask line of /proc/self/status (`CapEff:`, `SigIgn:`, ...).
fn status_mask(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let value = status.lines().find_map(|l| l.strip_prefix(field))?;
    u64::from_str_radix(value.trim(), 16).ok()
}

/// setns needs CAP_SYS_ADMIN: say so before anything else fails obscurely.
fn require_sys_admin() -> Result<()> {
    let caps = status_mask("CapEff:");
    if caps.is_some_and(|c| c & (1 << CAP_SYS_ADMIN) == 0) {
        bail!(
            "podscope exec needs root: joining a pod's namespaces takes CAP_SYS_ADMIN (and \
             CAP_SYS_PTRACE to open another user's /proc/PID/ns); run it as root, e.g. with sudo"
        );
    }
    Ok(())
}

/// The process whose namespaces to join. With --container, the named one
/// (it must run); else the first container, or, when only pod-wide namespaces
/// are asked for, any running container or the pause process.
fn choose_target(pod: &Pod, container_named: bool, namespaces: &[Ns]) -> Result<Target> {
    let name = pod.qualified_name();
    let target = |pid: u32| Target {
        pod: name.clone(),
        file_stem: if pod.namespace.is_empty() {
            pod.name.clone()
        } else {
            format!("{}_{}", pod.namespace, pod.name)
        },
        pid,
    };
    let running = |c: &&Container| c.pid.is_some();
    if let Some(c) = pod.containers.first().filter(running) {
        return Ok(target(c.pid.unwrap_or_default()));
    }
    if container_named {
        // select() narrowed the containers to the named ones: take any that runs.
        if let Some(pid) = pod.containers.iter().find(running).and_then(|c| c.pid) {
            return Ok(target(pid));
        }
    } else if namespaces.iter().all(|n| n.pod_wide()) {
        if let Some(pid) = pod
            .containers
            .iter()
            .find(running)
            .and_then(|c| c.pid)
            .or(pod.sandbox_pid)
        {
            return Ok(target(pid));
        }
    }
    let Some(first) = pod.containers.first() else {
        bail!("pod {name} has no containers, so no process whose namespaces to join");
    };
    let others: Vec<&str> = pod
        .containers
        .iter()
        .filter(running)
        .map(|c| c.name.as_str())
        .collect();
    let hint = if container_named || others.is_empty() {
        String::new()
    } else {
        format!(
            "; running containers: {} (choose one with --container NAME)",
            others.join(", ")
        )
    };
    bail!(
        "container {} of pod {name} is not running (state: {}), so it has no process whose \
         namespaces to join{hint}",
        first.name,
        format!("{:?}", first.state).to_lowercase()
    )
}

fn shares_host_network(pid: u32) -> bool {
    let a = std::fs::metadata(format!("/proc/{pid}/ns/net"));
    let b = std::fs::metadata("/proc/self/ns/net");
    matches!((a, b), (Ok(a), Ok(b)) if a.dev() == b.dev() && a.ino() == b.ino())
}

/// Where the tools' output goes.
#[derive(Debug)]
enum Output {
    /// One pod: the terminal, untouched (interactive tools work).
    Inherit,
    /// Several pods: each line prefixed with `namespace/pod: `.
    Prefixed,
    /// `DIR/<namespace>_<pod>.log`, stdout and stderr together.
    Files(PathBuf),
}

/// One pod's running command.
#[derive(Debug)]
struct Running {
    child: Child,
    /// Threads copying piped output to the terminal.
    pumps: Vec<JoinHandle<()>>,
    log: Option<PathBuf>,
    code: Option<i32>,
    stopped_by_timeout: bool,
}

/// The signals podscope passes on to the tools rather than dying of them.
fn forwarded_signals() -> SigSet {
    let mut set = SigSet::empty();
    for s in [
        Signal::SIGINT,
        Signal::SIGTERM,
        Signal::SIGHUP,
        Signal::SIGQUIT,
    ] {
        set.add(s);
    }
    set
}

/// The forwarded signals and SIGCHLD: what a supervising process blocks and
/// reads from a signalfd.
fn handled_signals() -> SigSet {
    let mut set = forwarded_signals();
    set.add(Signal::SIGCHLD);
    set
}

/// Blocks [`handled_signals`] in this thread (and so in the threads it starts
/// later) and returns a descriptor that reports them with their sender.
/// Children inherit the mask (std does not reset it): [`nsenter`] clears it.
fn signal_fd(flags: SfdFlags) -> Result<SignalFd> {
    let set = handled_signals();
    set.thread_block().context("blocking signals")?;
    SignalFd::with_flags(&set, flags | SfdFlags::SFD_CLOEXEC).context("creating a signalfd")
}

/// Passes a signal on to the children, unless the terminal sent it: then it
/// went to the whole foreground process group, children included, and a
/// second copy would make tools that count Ctrl-Cs quit harder.
fn forward(info: &siginfo, children: impl Iterator<Item = u32>) {
    let Ok(sig) = Signal::try_from(info.ssi_signo as i32) else {
        return;
    };
    if sig == Signal::SIGCHLD || info.ssi_code == SI_KERNEL {
        return;
    }
    for pid in children {
        let _ = kill(Pid::from_raw(pid as i32), sig);
    }
}

fn supervise(
    exe: &Path,
    targets: &[Target],
    namespaces: &str,
    command: &[String],
    output: &Output,
    timeout: Option<Duration>,
) -> Result<Vec<i32>> {
    let signals = signal_fd(SfdFlags::SFD_NONBLOCK)?;
    let mut running = Vec::new();
    for t in targets {
        let mut cmd = Command::new(exe);
        cmd.arg("__nsenter")
            .arg("--target")
            .arg(t.pid.to_string())
            .arg("--ns")
            .arg(namespaces)
            .arg("--")
            .args(command);
        let several = targets.len() > 1;
        let mut log = None;
        match output {
            Output::Inherit => {}
            Output::Prefixed => {
                cmd.stdin(Stdio::null())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped());
            }
            Output::Files(dir) => {
                let path = dir.join(format!("{}.log", t.file_stem));
                let file =
                    File::create(&path).with_context(|| format!("creating {}", path.display()))?;
                let err = file
                    .try_clone()
                    .with_context(|| format!("duplicating {}", path.display()))?;
                if several {
                    cmd.stdin(Stdio::null());
                }
                cmd.stdout(file).stderr(err);
                log = Some(path);
            }
        }
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                stop_all(&mut running);
                return Err(anyhow!(
                    "starting {} __nsenter for pod {}: {e}",
                    exe.display(),
                    t.pod
                ));
            }
        };
        let mut pumps = Vec::new();
        if let Some(out) = child.stdout.take() {
            pumps.push(pump(out, format!("{}: ", t.pod), false));
        }
        if let Some(err) = child.stderr.take() {
            pumps.push(pump(err, format!("{}: ", t.pod), true));
        }
        running.push(Running {
            child,
            pumps,
            log,
            code: None,
            stopped_by_timeout: false,
        });
    }

    let deadline = timeout.map(|t| Instant::now() + t);
    let mut kill_at: Option<Instant> = None;
    loop {
        for r in running.iter_mut().filter(|r| r.code.is_none()) {
            if let Some(status) = r.child.try_wait().context("waiting for the tool")? {
                r.code = Some(if r.stopped_by_timeout {
                    EXIT_TIMEOUT
                } else {
                    exit_code(status)
                });
            }
        }
        if running.iter().all(|r| r.code.is_some()) {
            break;
        }
        let now = Instant::now();
        if kill_at.is_none() && deadline.is_some_and(|d| now >= d) {
            for r in running.iter_mut().filter(|r| r.code.is_none()) {
                r.stopped_by_timeout = true;
                let _ = kill(Pid::from_raw(r.child.id() as i32), Signal::SIGTERM);
            }
            kill_at = Some(now + KILL_AFTER);
        } else if kill_at.is_some_and(|k| now >= k) {
            for r in running.iter().filter(|r| r.code.is_none()) {
                kill_tree(r.child.id());
            }
            kill_at = Some(now + Duration::from_secs(1));
        }
        let wake = kill_at.or(deadline);
        let wait = match wake {
            Some(w) => PollTimeout::try_from(
                w.saturating_duration_since(Instant::now()) + Duration::from_millis(1),
            )
            .unwrap_or(PollTimeout::MAX),
            None => PollTimeout::NONE,
        };
        match poll(&mut [PollFd::new(signals.as_fd(), PollFlags::POLLIN)], wait) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => return Err(anyhow!("waiting for signals: {e}")),
        }
        while let Some(info) = signals.read_signal().context("reading signals")? {
            forward(
                &info,
                running
                    .iter()
                    .filter(|r| r.code.is_none())
                    .map(|r| r.child.id()),
            );
        }
    }

    let mut codes = Vec::new();
    for (t, r) in targets.iter().zip(running) {
        for p in r.pumps {
            let _ = p.join();
        }
        let code = r.code.unwrap_or(1);
        let why = if r.stopped_by_timeout {
            " (stopped by --timeout)"
        } else {
            ""
        };
        match (&r.log, output) {
            (Some(log), _) => eprintln!(
                "podscope: {}: exit code {code}{why}; output in {}",
                t.pod,
                log.display()
            ),
            (None, Output::Prefixed) if code != 0 => {
                eprintln!("podscope: {}: exit code {code}{why}", t.pod)
            }
            _ => {}
        }
        codes.push(code);
    }
    Ok(codes)
}

/// Kills what was started so far when a later start fails.
fn stop_all(running: &mut [Running]) {
    for r in running.iter_mut() {
        kill_tree(r.child.id());
        let _ = r.child.wait();
    }
}

/// Copies lines from a child's pipe to our stdout or stderr, each behind a
/// prefix; one write per line under the lock, so pods never mix within a line.
fn pump(src: impl Read + Send + 'static, prefix: String, to_stderr: bool) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut reader = BufReader::new(src);
        let mut line = Vec::new();
        loop {
            line.clear();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
            if !line.ends_with(b"\n") {
                line.push(b'\n');
            }
            let mut buf = Vec::with_capacity(prefix.len() + line.len());
            buf.extend_from_slice(prefix.as_bytes());
            buf.extend_from_slice(&line);
            let written = if to_stderr {
                io::stderr().lock().write_all(&buf)
            } else {
                let mut out = io::stdout().lock();
                out.write_all(&buf).and_then(|()| out.flush())
            };
            // Our output is gone (`| head`): stop reading, so the tool gets
            // EPIPE/SIGPIPE as it would without podscope.
            if written.is_err() {
                break;
            }
        }
    })
}

/// SIGKILL to a process and everything it started (with `pid`, the
/// nsenter child started the tool, which SIGKILL to the child alone would
/// leave running).
fn kill_tree(pid: u32) {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let Some(p) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            if let Some(ppid) = parent_pid(p) {
                children.entry(ppid).or_default().push(p);
            }
        }
    }
    let mut todo = vec![pid];
    let mut all = Vec::new();
    while let Some(p) = todo.pop() {
        all.push(p);
        todo.extend(children.get(&p).into_iter().flatten().copied());
    }
    // Descendants first: once the child dies they would be reparented.
    for p in all.into_iter().rev() {
        let _ = kill(Pid::from_raw(p as i32), Signal::SIGKILL);
    }
}

fn parent_pid(pid: u32) -> Option<u32> {
    ppid_from_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// The parent pid in a /proc/PID/stat line.
fn ppid_from_stat(stat: &str) -> Option<u32> {
    // comm may hold spaces and parentheses: the fields after the last ')' are fixed.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

fn exit_code(status: ExitStatus) -> i32 {
    status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

// ---------------------------------------------------------------- child

/// What [`enter`] changed.
#[derive(Debug, Default, Clone, Copy)]
struct Joined {
    pid: bool,
    mnt: bool,
}

/// The child side: join namespaces, then run the command. Returns the exit
/// code; never returns at all when the command replaces this process.
pub fn nsenter(args: NsenterArgs) -> Result<i32> {
    // The parent blocks the signals it forwards and the mask is inherited:
    // the tool must start with a clean one, as it would from a shell.
    if let Err(e) = SigSet::empty().thread_set_mask() {
        eprintln!("podscope: error: clearing the signal mask: {e}");
        return Ok(EXIT_CANNOT_ENTER);
    }
    let joined = match parse_namespaces(&args.namespaces).and_then(|ns| enter(args.target, &ns)) {
        Ok(j) => j,
        Err(e) => {
            eprintln!("podscope: error: {e:#}");
            return Ok(EXIT_CANNOT_ENTER);
        }
    };
    if args.command.is_empty() {
        eprintln!("podscope: error: no command given");
        return Ok(EXIT_CANNOT_ENTER);
    }
    Ok(if joined.pid {
        spawn_and_wait(&args.command, joined.mnt)
    } else {
        exec(&args.command, joined.mnt)
    })
}

/// Opens every namespace of `target`, then joins them in order.
fn enter(target: u32, namespaces: &[Ns]) -> Result<Joined> {
    // All files first: once in the container's mount namespace, /proc is the
    // container's and /proc/<host pid> is not there.
    let mut files = Vec::new();
    for &ns in namespaces {
        let path = format!("/proc/{target}/ns/{}", ns.name());
        let file = File::open(&path).map_err(|e| open_error(target, ns, &path, e))?;
        let same = is_own_namespace(&file, ns);
        files.push((ns, file, same));
    }
    let mut joined = Joined::default();
    for (ns, file, same) in &files {
        // Already there (a hostNetwork pod, the host's cgroup namespace): nothing to do.
        if *same {
            continue;
        }
        setns(file, ns.flag()).map_err(|e| setns_error(target, *ns, e))?;
        match ns {
            Ns::Pid => joined.pid = true,
            Ns::Mnt => joined.mnt = true,
            _ => {}
        }
    }
    if joined.mnt {
        // The host's working directory means nothing in the container.
        std::env::set_current_dir("/").context("changing to / in the container's file system")?;
    }
    Ok(joined)
}

fn open_error(target: u32, ns: Ns, path: &str, e: io::Error) -> anyhow::Error {
    match e.kind() {
        io::ErrorKind::NotFound if Path::new(&format!("/proc/{target}")).exists() => {
            anyhow!(
                "this kernel has no {} namespaces ({path} is missing)",
                ns.name()
            )
        }
        io::ErrorKind::NotFound => {
            anyhow!("process {target} is gone: the container stopped (try again to pick up its new process)")
        }
        io::ErrorKind::PermissionDenied => anyhow!(
            "cannot open {path}: permission denied; joining another process's namespaces needs \
             root (CAP_SYS_PTRACE and CAP_SYS_ADMIN)"
        ),
        _ => anyhow!("cannot open {path}: {e}"),
    }
}

fn setns_error(target: u32, ns: Ns, e: Errno) -> anyhow::Error {
    let what = format!("joining the {} namespace of process {target}", ns.name());
    match e {
        Errno::EPERM => anyhow!(
            "{what}: permission denied; setns needs root (CAP_SYS_ADMIN{})",
            if ns == Ns::Mnt {
                " and CAP_SYS_CHROOT"
            } else {
                ""
            }
        ),
        other => anyhow!("{what}: {}", other.desc()),
    }
}

/// Becomes the command (no pid namespace to apply: nothing left to wait for).
fn exec(command: &[String], in_container: bool) -> i32 {
    // Rust starts with SIGPIPE ignored, and an ignored signal stays ignored
    // across execve: `podscope exec ... | head` would leave the tool writing
    // into EPIPE errors. A caught signal is reset to the default by execve, so
    // installing any handler undoes the SIG_IGN.
    let _ = signal_hook::flag::register(
        signal_hook::consts::SIGPIPE,
        Arc::new(AtomicBool::new(false)),
    );
    let argv: Vec<CString> = match command
        .iter()
        .map(|a| CString::new(a.as_bytes()))
        .collect::<Result<_, _>>()
    {
        Ok(v) => v,
        Err(_) => {
            eprintln!("podscope: the command contains a NUL byte");
            return EXIT_CANNOT_RUN;
        }
    };
    let Err(e) = execvp(&argv[0], &argv);
    report_exec_error(&command[0], io::Error::from(e), in_container)
}

/// Starts the command as a child (only children enter a joined pid
/// namespace), passes signals on, and returns its exit code.
fn spawn_and_wait(command: &[String], in_container: bool) -> i32 {
    // The tool inherits our signal mask, so the mask is open while it starts.
    // Handlers keep a signal that comes in that moment from killing us, and
    // note it; execve resets handlers in the tool. A signal ignored already
    // (a shell's background job ignores SIGINT) stays ignored, as the tool
    // would inherit it without podscope.
    let ignored = status_mask("SigIgn:");
    let mut caught = Vec::new();
    for sig in forwarded_signals().iter() {
        if ignored.is_some_and(|m| m & (1 << (sig as i32 - 1)) != 0) {
            continue;
        }
        let flag = Arc::new(AtomicBool::new(false));
        if signal_hook::flag::register(sig as i32, Arc::clone(&flag)).is_ok() {
            caught.push((sig, flag));
        }
    }
    let signals = match signal_fd(SfdFlags::empty()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("podscope: error: {e:#}");
            return EXIT_CANNOT_ENTER;
        }
    };
    let _ = SigSet::empty().thread_set_mask();
    let spawned = Command::new(&command[0]).args(&command[1..]).spawn();
    if let Err(e) = handled_signals().thread_block() {
        eprintln!("podscope: error: blocking signals: {e}");
        return EXIT_CANNOT_ENTER;
    }
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => return report_exec_error(&command[0], e, in_container),
    };
    // Sender unknown for these: pass them on (the tool may have started too
    // late to get a terminal's copy).
    for (sig, flag) in &caught {
        if flag.swap(false, std::sync::atomic::Ordering::SeqCst) {
            let _ = kill(Pid::from_raw(child.id() as i32), *sig);
        }
    }
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return exit_code(status),
            Ok(None) => {}
            Err(e) => {
                eprintln!("podscope: error: waiting for {}: {e}", command[0]);
                return EXIT_CANNOT_ENTER;
            }
        }
        // Blocks until a signal, SIGCHLD included, arrives.
        match signals.read_signal() {
            Ok(Some(info)) => forward(&info, std::iter::once(child.id())),
            Ok(None) | Err(Errno::EINTR) => {}
            Err(e) => {
                eprintln!("podscope: error: reading signals: {e}");
                return EXIT_CANNOT_ENTER;
            }
        }
    }
}

/// Explains why the command could not start; returns 127 or 126.
fn report_exec_error(program: &str, e: io::Error, in_container: bool) -> i32 {
    let place = if in_container {
        "in the container's file system"
    } else {
        "on this host"
    };
    if e.raw_os_error() == Some(Errno::ENOENT as i32) {
        if let Some(found) = find_program(program) {
            eprintln!(
                "podscope: {program}: {} exists {place} but cannot be run: its interpreter or \
                 dynamic loader is missing",
                found.display()
            );
            return EXIT_CANNOT_RUN;
        }
        let path = std::env::var("PATH").unwrap_or_default();
        let hint = if in_container {
            ""
        } else {
            "; to run the container's own binaries, add mnt to --ns"
        };
        eprintln!("podscope: {program}: command not found {place} (PATH={path}){hint}");
        return EXIT_NOT_FOUND;
    }
    eprintln!("podscope: {program}: cannot execute {place}: {e}");
    EXIT_CANNOT_RUN
}

/// Where execvp would have found `program`, if anywhere.
fn find_program(program: &str) -> Option<PathBuf> {
    if program.contains('/') {
        let p = PathBuf::from(program);
        return p.exists().then_some(p);
    }
    let path = std::env::var("PATH").unwrap_or_else(|_| "/bin:/usr/bin".into());
    path.split(':')
        .map(|dir| Path::new(if dir.is_empty() { "." } else { dir }).join(program))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_are_validated_and_ordered_for_joining() {
        assert_eq!(parse_namespaces("net").unwrap(), [Ns::Net]);
        assert_eq!(
            parse_namespaces("mnt,pid,net,net").unwrap(),
            [Ns::Net, Ns::Pid, Ns::Mnt],
            "pid before mnt, duplicates dropped"
        );
        assert_eq!(
            parse_namespaces(" uts , IPC,cgroup,mount").unwrap(),
            [Ns::Cgroup, Ns::Ipc, Ns::Uts, Ns::Mnt]
        );
        let e = parse_namespaces("net,user").unwrap_err().to_string();
        assert!(e.contains("unknown namespace 'user'"), "{e}");
        assert!(e.contains("net, pid, mnt, uts, ipc, cgroup"), "{e}");
        assert!(parse_namespaces(",")
            .unwrap_err()
            .to_string()
            .contains("empty"));
        assert_eq!(
            namespace_list(&parse_namespaces("mnt,pid").unwrap()),
            "pid,mnt"
        );
    }

    fn container(name: &str, pid: Option<u32>) -> Container {
        Container {
            id: format!("id-{name}"),
            name: name.into(),
            image: "img".into(),
            pid,
            cgroup_path: None,
            cgroup_id: None,
            state: if pid.is_some() {
                podscope_runtime::ContainerState::Running
            } else {
                podscope_runtime::ContainerState::Exited
            },
        }
    }

    fn pod(containers: Vec<Container>) -> Pod {
        Pod {
            uid: "u".into(),
            name: "web-0".into(),
            namespace: "shop".into(),
            labels: Default::default(),
            runtime: "containerd".into(),
            sandbox_id: None,
            state: podscope_runtime::PodState::Ready,
            ip: None,
            sandbox_pid: Some(5),
            cgroup_path: None,
            cgroup_id: None,
            source: podscope_runtime::Source::Cri,
            containers,
        }
    }

    #[test]
    fn target_is_the_first_container_else_a_pod_wide_stand_in() {
        let p = pod(vec![
            container("app", Some(10)),
            container("side", Some(11)),
        ]);
        let t = choose_target(&p, false, &[Ns::Pid]).unwrap();
        assert_eq!(
            (t.pid, t.pod.as_str(), t.file_stem.as_str()),
            (10, "shop/web-0", "shop_web-0")
        );

        let p = pod(vec![container("app", None), container("side", Some(11))]);
        assert_eq!(
            choose_target(&p, false, &[Ns::Net]).unwrap().pid,
            11,
            "net is the pod's"
        );
        let e = choose_target(&p, false, &[Ns::Net, Ns::Mnt])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("container app of pod shop/web-0 is not running (state: exited)"),
            "{e}"
        );
        assert!(e.contains("running containers: side"), "{e}");

        let p = pod(vec![container("app", None)]);
        assert_eq!(
            choose_target(&p, false, &[Ns::Net]).unwrap().pid,
            5,
            "the pause process"
        );
        let e = choose_target(&p, true, &[Ns::Net]).unwrap_err().to_string();
        assert!(e.contains("not running"), "{e}");
    }

    #[test]
    fn parent_pid_survives_odd_command_names() {
        assert_eq!(ppid_from_stat("42 (a) b (c)) S 7 42 42 0 -1"), Some(7));
        assert_eq!(ppid_from_stat("garbage"), None);
        assert_eq!(
            parent_pid(std::process::id()),
            Some(std::os::unix::process::parent_id())
        );
    }
}
