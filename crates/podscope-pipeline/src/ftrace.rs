//! The `ftrace` hook: tracepoints through a tracefs instance of the trace's
//! own, filtered to the selected pods' tasks with `set_event_pid` and
//! `options/event-fork` (container-tracer's mechanism), for kernels or
//! machines where BPF is not allowed. No BPF program is loaded.
//!
//! Records are the tracepoint probe's (`kind: record`, `SUBSYSTEM:EVENT`,
//! fields named as the event's format file names them), parsed from
//! `trace_pipe`'s text with the event's `print fmt`: each conversion of the
//! format string is matched to the field its argument reads, so
//! `comm=sh pid=12 child_comm=sh child_pid=13` of `sched_process_fork`
//! becomes `parent_comm`, `parent_pid`, `child_comm`, `child_pid`. A line the
//! format does not match keeps its text as the field `text`.
//!
//! Instances are named `podscope-PID-N`; one left behind by a podscope that
//! died (its PID gone) is removed the next time a trace starts.

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use podscope_bpf::tracepoint::{FieldKind, Format};
use podscope_model::{Event, EventData, Identity, Timestamp, TpFields, TpValue, TracepointEvent};

/// The prefix every podscope instance has.
const PREFIX: &str = "podscope-";

/// A tracefs instance of one trace.
pub struct Instance {
    dir: PathBuf,
    pipe: Option<File>,
    buf: Vec<u8>,
    events: HashMap<String, Parser>,
    pids: HashSet<u32>,
    /// wall - mono, ns (the instance runs on the `mono` trace clock).
    offset: i128,
    tgid: HashMap<u32, (u32, u64)>,
    mount: Option<PathBuf>,
    /// Events ftrace reported it lost (`[LOST N EVENTS]`).
    pub lost: u64,
    /// Lines no event of this trace matched (counted, not shown).
    pub unparsed: u64,
    /// Tracepoints the filter does not apply to (they lack its fields).
    pub warnings: Vec<String>,
}

impl std::fmt::Debug for Instance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Instance").field("dir", &self.dir).finish()
    }
}

fn tracefs() -> Result<PathBuf> {
    let events = podscope_bpf::tracefs_events()?;
    Ok(events.parent().unwrap_or(Path::new("/")).to_path_buf())
}

fn write(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).with_context(|| format!("writing '{text}' to {}", path.display()))
}

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Turns an instance off and removes it.
fn remove(dir: &Path) -> Result<()> {
    let _ = std::fs::write(dir.join("tracing_on"), "0");
    let _ = std::fs::write(dir.join("events/enable"), "0");
    let _ = std::fs::write(dir.join("set_event_pid"), "");
    std::fs::remove_dir(dir)
        .with_context(|| format!("removing the tracefs instance {}", dir.display()))
}

/// Removes the instances of podscope processes that no longer run (a crash
/// or a kill -9 leaves its instance tracing). Returns their names.
pub fn clean_stale() -> Result<Vec<String>> {
    let dir = tracefs()?.join("instances");
    let mut gone = Vec::new();
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Ok(gone);
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        let Some(pid) = name
            .strip_prefix(PREFIX)
            .and_then(|r| r.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !alive(pid) {
            match remove(&e.path()) {
                Ok(()) => gone.push(name),
                // Another podscope starting at the same time removed it.
                Err(_) if !e.path().exists() => {}
                Err(err) => return Err(err),
            }
        }
    }
    Ok(gone)
}

/// The instance names this process has open (tests, `docs/probes.md`).
pub fn instance_dir(n: u64) -> Result<PathBuf> {
    Ok(tracefs()?
        .join("instances")
        .join(format!("{PREFIX}{}-{n}", std::process::id())))
}

impl Instance {
    /// Creates the instance with these tracepoints (`SUBSYSTEM:EVENT`, with
    /// or without `ftrace:`), nothing traced until [`Instance::add_pids`] or
    /// [`Instance::start`]. `filter` (`--filter`, the BPF hook's syntax and
    /// checks) goes to each event's ftrace `filter` file, so ftrace drops
    /// what it rejects before it is buffered.
    pub fn create(names: &[String], filter: Option<&str>) -> Result<Instance> {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        let bare: Vec<String> = names
            .iter()
            .map(|n| {
                n.trim()
                    .strip_prefix("ftrace:")
                    .unwrap_or(n.trim())
                    .to_string()
            })
            .collect();
        // Unknown tracepoints fail here, with close matches; so do unknown
        // filter fields and bad comparisons.
        let opts = podscope_bpf::TracepointOptions {
            names: bare.clone(),
            filter: filter.map(str::to_string),
        };
        let resolved = podscope_bpf::tracepoint::resolve(&opts)?;
        let warnings = resolved.warnings(&opts);
        // Each filtered event's clause, in ftrace's syntax.
        let mut filters: Vec<(String, String)> = Vec::new();
        if let Some(f) = filter {
            let expr = podscope_bpf::tracepoint::filter::parse(f).map_err(anyhow::Error::msg)?;
            for (i, fmt) in resolved.formats.iter().enumerate() {
                if resolved.filtered(i) {
                    let text = podscope_bpf::tracepoint::filter::ftrace_text(
                        expr.for_tracepoint(&fmt.name),
                    )
                    .map_err(anyhow::Error::msg)?;
                    filters.push((fmt.name.clone(), text));
                }
            }
        }
        // Forks are always traced, not always shown: a child's records are
        // attributed through its parent's fork record when the child has
        // left /proc by the time they are read.
        const FORK: &str = "sched:sched_process_fork";
        let mut resolved = resolved;
        let mut hidden = None;
        if !resolved.formats.iter().any(|f| f.name == FORK) {
            if let Ok(r) = podscope_bpf::tracepoint::resolve(&podscope_bpf::TracepointOptions {
                names: vec![FORK.into()],
                filter: None,
            }) {
                hidden = r.formats.first().map(|f| f.name.clone());
                resolved.formats.extend(r.formats);
            }
        }
        let events_dir = podscope_bpf::tracefs_events()?;
        let mut events = HashMap::new();
        for f in &resolved.formats {
            let (sys, ev) = f.name.split_once(':').unwrap_or((&f.name, ""));
            let text = std::fs::read_to_string(events_dir.join(sys).join(ev).join("format"))
                .with_context(|| format!("reading the format of {}", f.name))?;
            let mut p = Parser::new(f.clone(), &text);
            p.hidden = hidden.as_deref() == Some(f.name.as_str());
            events.insert(ev.to_string(), p);
        }
        let dir = instance_dir(NEXT.fetch_add(1, Ordering::Relaxed))?;
        std::fs::create_dir(&dir).with_context(|| {
            format!(
                "creating the tracefs instance {} (is tracefs writable?)",
                dir.display()
            )
        })?;
        let mut inst = Instance {
            dir: dir.clone(),
            pipe: None,
            buf: Vec::new(),
            events,
            pids: HashSet::new(),
            offset: Timestamp::now().0 as i128 - podscope_bpf::monotonic_ns() as i128,
            tgid: HashMap::new(),
            mount: crate::cgroup::v2_mount().ok(),
            lost: 0,
            unparsed: 0,
            warnings,
        };
        let setup = || -> Result<()> {
            write(&dir.join("tracing_on"), "0")?;
            write(&dir.join("trace_clock"), "mono")?;
            write(&dir.join("options/event-fork"), "1")?;
            for (name, text) in &filters {
                let (sys, ev) = name.split_once(':').unwrap_or((name, ""));
                let path = dir.join("events").join(sys).join(ev).join("filter");
                if std::fs::write(&path, text).is_err() {
                    // ftrace says why in the file itself.
                    let why = std::fs::read_to_string(&path).unwrap_or_default();
                    anyhow::bail!(
                        "ftrace refused the filter '{text}' for {name}: {}",
                        why.trim().replace('\n', " ")
                    );
                }
            }
            for f in &resolved.formats {
                let (sys, ev) = f.name.split_once(':').unwrap_or((&f.name, ""));
                write(&dir.join("events").join(sys).join(ev).join("enable"), "1")?;
            }
            Ok(())
        };
        setup()?;
        inst.pipe = Some(
            OpenOptions::new()
                .read(true)
                .custom_flags(0o4000) // O_NONBLOCK
                .open(dir.join("trace_pipe"))
                .context("opening the instance's trace_pipe")?,
        );
        Ok(inst)
    }

    /// The instance's directory under tracefs.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Traces these tasks (thread ids) from now on, and the tasks they fork.
    /// Returns how many were new.
    pub fn add_pids(&mut self, tids: impl IntoIterator<Item = u32>) -> Result<usize> {
        let new: Vec<u32> = tids
            .into_iter()
            .filter(|t| !self.pids.contains(t))
            .collect();
        if new.is_empty() {
            return Ok(0);
        }
        let text: Vec<String> = new.iter().map(u32::to_string).collect();
        let mut f = OpenOptions::new()
            .append(true)
            .open(self.dir.join("set_event_pid"))
            .context("opening set_event_pid")?;
        // A task that exited meanwhile is refused (ESRCH) only for itself:
        // write them one by one.
        let mut added = 0;
        for (t, s) in new.iter().zip(&text) {
            if f.write_all(format!("{s} ").as_bytes()).is_ok() {
                added += 1;
            }
            self.pids.insert(*t);
        }
        Ok(added)
    }

    /// Sets the instance's buffer (per CPU, ftrace's `buffer_size_kb`);
    /// returns what ftrace made of it (it rounds to pages).
    pub fn set_buffer_bytes(&self, bytes: u32) -> Result<u64> {
        let path = self.dir.join("buffer_size_kb");
        write(&path, &(u64::from(bytes).div_ceil(1024)).to_string())?;
        let now = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        // "1408" or, before the first resize on old kernels, "7 (expanded: 1408)".
        now.split_whitespace()
            .next()
            .and_then(|n| n.parse().ok())
            .with_context(|| format!("{}: '{}' is not a size", path.display(), now.trim()))
    }

    /// Starts tracing (after the first pids are in).
    pub fn start(&self) -> Result<()> {
        write(&self.dir.join("tracing_on"), "1")
    }

    /// The records ftrace has now (never blocks).
    pub fn read(&mut self, out: &mut Vec<Event>) -> Result<usize> {
        let Some(pipe) = self.pipe.as_mut() else {
            return Ok(0);
        };
        let mut chunk = [0u8; 64 << 10];
        loop {
            match pipe.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(e).context("reading trace_pipe"),
            }
        }
        let before = out.len();
        let Some(end) = self.buf.iter().rposition(|b| *b == b'\n') else {
            return Ok(0);
        };
        let text = String::from_utf8_lossy(&self.buf[..end]).to_string();
        self.buf.drain(..=end);
        for line in text.lines() {
            self.line(line, out);
        }
        Ok(out.len() - before)
    }

    fn line(&mut self, line: &str, out: &mut Vec<Event>) {
        if let Some(n) = line
            .split_once("[LOST ")
            .and_then(|(_, r)| r.split_whitespace().next())
            .and_then(|n| n.parse::<u64>().ok())
        {
            self.lost += n;
            return;
        }
        let Some(rec) = parse_line(line) else {
            if !line.trim().is_empty() {
                self.unparsed += 1;
            }
            return;
        };
        let Some(parser) = self.events.get(&rec.event) else {
            self.unparsed += 1;
            return;
        };
        let fields = parser.fields(&rec.rest);
        let name = parser.format.name.clone();
        let hidden = parser.hidden;
        let (tgid, cgroup_id) = self.task(rec.tid);
        // A child is in its parent's cgroup: remembered now, for a child that
        // is gone from /proc by the time its own records are read.
        if name == "sched:sched_process_fork" {
            if let Some(TpValue::Int(c)) = fields.get("child_pid") {
                let c = *c as u32;
                self.tgid.entry(c).or_insert((c, cgroup_id));
            }
        }
        if hidden {
            return;
        }
        out.push(Event {
            timestamp: Timestamp((rec.mono_ns as i128 + self.offset).max(0) as u64),
            identity: Identity::default(),
            pid: tgid,
            tid: rec.tid,
            uid: 0,
            comm: rec.comm.to_string(),
            cgroup_id,
            data: EventData::Tracepoint(TracepointEvent {
                kind: "record".into(),
                tracepoint: name,
                fields,
                truncated: false,
            }),
        });
    }

    /// A task's process id and cgroup id (from /proc; remembered).
    fn task(&mut self, tid: u32) -> (u32, u64) {
        if let Some(v) = self.tgid.get(&tid) {
            return *v;
        }
        let tgid = std::fs::read_to_string(format!("/proc/{tid}/status"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("Tgid:"))
                    .and_then(|v| v.trim().parse().ok())
            })
            .unwrap_or(tid);
        let cgroup = std::fs::read_to_string(format!("/proc/{tid}/cgroup"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("0::").map(str::to_string))
            })
            .and_then(|p| {
                let root = self.mount.as_ref()?;
                std::fs::metadata(format!("{}{}", root.display(), p)).ok()
            })
            .map_or(0, |m| m.ino());
        if self.tgid.len() > 65536 {
            self.tgid.clear();
        }
        self.tgid.insert(tid, (tgid, cgroup));
        (tgid, cgroup)
    }

    /// Turns tracing off and removes the instance.
    pub fn close(mut self) -> Result<()> {
        self.pipe = None;
        let dir = std::mem::take(&mut self.dir);
        remove(&dir)
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.pipe = None;
        if !self.dir.as_os_str().is_empty() {
            let _ = remove(&self.dir);
        }
    }
}

/// The thread ids of the tasks in these cgroups (relative to the cgroup v2
/// root), descendants included.
pub fn cgroup_tids(paths: &[String]) -> Vec<u32> {
    let Ok(root) = crate::cgroup::v2_mount() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut stack: Vec<PathBuf> = paths
        .iter()
        .map(|p| {
            if Path::new(p).is_absolute() && Path::new(p).starts_with(&root) {
                PathBuf::from(p)
            } else {
                root.join(p.trim_start_matches('/'))
            }
        })
        .collect();
    while let Some(dir) = stack.pop() {
        if let Ok(t) = std::fs::read_to_string(dir.join("cgroup.threads")) {
            out.extend(t.lines().filter_map(|l| l.trim().parse::<u32>().ok()));
        }
        if let Ok(entries) = std::fs::read_dir(&dir) {
            stack.extend(
                entries
                    .flatten()
                    .filter(|e| e.path().is_dir())
                    .map(|e| e.path()),
            );
        }
    }
    out
}

/// The parts of one trace_pipe line.
#[derive(Debug, PartialEq)]
struct Line<'a> {
    comm: &'a str,
    tid: u32,
    mono_ns: u64,
    event: String,
    rest: String,
}

/// `<comm>-<tid> [cpu] <flags> <secs.usecs>: <event>: <rest>` (the flags
/// column depends on options; comm may hold spaces and dashes).
fn parse_line(line: &str) -> Option<Line<'_>> {
    let open = line.find(" [")?;
    let head = line[..open].trim();
    let (comm, tid) = head.rsplit_once('-')?;
    let tid: u32 = tid.parse().ok()?;
    let after = &line[open + 2..];
    let close = after.find(']')?;
    let mut rest = &after[close + 1..];
    // The timestamp: the first word ending in ':' that is a number.
    let mono_ns = loop {
        let t = rest.trim_start();
        let (word, more) = t.split_once(' ')?;
        rest = more;
        if let Some(ts) = word.strip_suffix(':') {
            if let Some((s, frac)) = ts.split_once('.') {
                if let (Ok(s), true) = (s.parse::<u64>(), frac.chars().all(|c| c.is_ascii_digit()))
                {
                    let mut ns = frac.to_string();
                    ns.truncate(9);
                    while ns.len() < 9 {
                        ns.push('0');
                    }
                    break s * 1_000_000_000 + ns.parse::<u64>().ok()?;
                }
            }
        }
    };
    let body = rest.trim_start();
    // System calls print as `sys_openat(dfd: ..., ...)` (entry) and
    // `sys_openat -> 0x3` (exit), not as `EVENT: text`.
    let word_end = body.find([':', '(', ' ']).unwrap_or(body.len());
    if let Some(name) = body[..word_end].strip_prefix("sys_") {
        let after = &body[word_end..];
        if let Some(args) = after.strip_prefix('(') {
            return Some(Line {
                comm,
                tid,
                mono_ns,
                event: format!("sys_enter_{name}"),
                rest: args
                    .trim_end()
                    .strip_suffix(')')
                    .unwrap_or(args)
                    .to_string(),
            });
        }
        if let Some(ret) = after.strip_prefix(" -> ") {
            return Some(Line {
                comm,
                tid,
                mono_ns,
                event: format!("sys_exit_{name}"),
                rest: ret.trim().to_string(),
            });
        }
    }
    let (event, rest) = body.split_once(':')?;
    Some(Line {
        comm,
        tid,
        mono_ns,
        event: event.trim().to_string(),
        rest: rest.strip_prefix(' ').unwrap_or(rest).to_string(),
    })
}

/// One conversion of a print fmt: the field it prints and how.
#[derive(Debug, Clone)]
struct Conv {
    field: Option<String>,
    hex: bool,
}

/// Reads an event's text back into its fields with its `print fmt`.
#[derive(Debug, Clone)]
struct Parser {
    format: Arc<Format>,
    /// Literal text before each conversion, and after the last.
    lits: Vec<String>,
    convs: Vec<Conv>,
    /// Traced for attribution only (its records are not written).
    hidden: bool,
}

impl Parser {
    fn new(format: Arc<Format>, text: &str) -> Parser {
        let (mut lits, convs) = text
            .lines()
            .find_map(|l| l.trim().strip_prefix("print fmt:"))
            .and_then(|pf| print_fmt(pf.trim()))
            .unwrap_or_default();
        // `0x%lx`: the value is read as hex with or without its 0x (the
        // kernel prints some, e.g. syscall arguments of 0, as a bare `0`).
        for (i, c) in convs.iter().enumerate() {
            if c.hex {
                if let Some(l) = lits[i].strip_suffix("0x").map(str::to_string) {
                    lits[i] = l;
                }
            }
        }
        Parser {
            format,
            lits,
            convs,
            hidden: false,
        }
    }

    fn fields(&self, text: &str) -> TpFields {
        self.matched(text)
            .unwrap_or_else(|| TpFields(vec![("text".into(), TpValue::Str(text.to_string()))]))
    }

    fn matched(&self, text: &str) -> Option<TpFields> {
        if self.convs.is_empty() {
            return None;
        }
        let mut rest = text.strip_prefix(self.lits[0].as_str())?;
        let mut out = Vec::new();
        for (i, conv) in self.convs.iter().enumerate() {
            let next = &self.lits[i + 1];
            let last = i + 1 == self.convs.len();
            let end = if next.is_empty() {
                if last {
                    rest.len()
                } else {
                    rest.find(' ').unwrap_or(rest.len())
                }
            } else if last {
                rest.rfind(next.as_str())?
            } else {
                rest.find(next.as_str())?
            };
            let value = &rest[..end];
            rest = &rest[end + next.len()..];
            let Some(name) = &conv.field else { continue };
            let Some(field) = self.format.field(name) else {
                continue;
            };
            if out.iter().any(|(n, _): &(String, TpValue)| n == name) {
                continue;
            }
            out.push((
                name.clone(),
                value_of(field.kind, field.signed, conv.hex, value),
            ));
        }
        Some(TpFields(out))
    }
}

fn value_of(kind: FieldKind, signed: bool, hex: bool, v: &str) -> TpValue {
    let t = v.trim();
    let num = |t: &str| -> Option<i128> {
        let (neg, d) = t.strip_prefix('-').map_or((false, t), |r| (true, r));
        let n = match d.strip_prefix("0x").or_else(|| d.strip_prefix("0X")) {
            Some(h) => i128::from_str_radix(h, 16).ok()?,
            None if hex => i128::from_str_radix(d, 16).ok()?,
            None => d.parse::<i128>().ok()?,
        };
        Some(if neg { -n } else { n })
    };
    match kind {
        FieldKind::Int => match num(t) {
            Some(n) if signed => TpValue::Int(n as i64),
            Some(n) => TpValue::Uint(n as u64),
            None => TpValue::Str(t.to_string()),
        },
        FieldKind::Pointer => match num(t) {
            Some(n) => TpValue::Str(format!("{:#x}", n as u64)),
            None => TpValue::Str(t.to_string()),
        },
        _ => TpValue::Str(v.to_string()),
    }
}

/// `"comm=%s pid=%d", __get_str(comm), REC->pid` → the literals and the
/// conversions with the fields they print.
fn print_fmt(pf: &str) -> Option<(Vec<String>, Vec<Conv>)> {
    let body = pf.strip_prefix('"')?;
    // The format string ends at the first unescaped quote.
    let mut fmt = String::new();
    let mut chars = body.char_indices();
    let mut end = None;
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => {
                if let Some((_, n)) = chars.next() {
                    fmt.push(match n {
                        'n' => '\n',
                        't' => '\t',
                        o => o,
                    });
                }
            }
            '"' => {
                end = Some(i);
                break;
            }
            c => fmt.push(c),
        }
    }
    let args = split_args(
        body[end? + 1..]
            .trim_start()
            .strip_prefix(',')
            .unwrap_or(""),
    );
    let mut lits = vec![String::new()];
    let mut convs = Vec::new();
    let mut it = fmt.chars().peekable();
    while let Some(c) = it.next() {
        if c != '%' {
            lits.last_mut()?.push(c);
            continue;
        }
        if it.peek() == Some(&'%') {
            it.next();
            lits.last_mut()?.push('%');
            continue;
        }
        let mut conv = None;
        for n in it.by_ref() {
            if n.is_ascii_alphabetic() && !matches!(n, 'l' | 'h' | 'z' | 'j' | 't' | 'L' | 'q') {
                conv = Some(n);
                break;
            }
        }
        let conv = conv?;
        // %pI4, %pS, ...: the extension letters belong to the conversion.
        if conv == 'p' {
            while it.peek().is_some_and(|c| c.is_ascii_alphanumeric()) {
                it.next();
            }
        }
        let arg = args.get(convs.len()).map(String::as_str).unwrap_or("");
        convs.push(Conv {
            field: field_of(arg),
            hex: matches!(conv, 'x' | 'X' | 'p'),
        });
        lits.push(String::new());
    }
    Some((lits, convs))
}

/// The field an argument of a print fmt reads: `REC->x`, `__get_str(x)`.
fn field_of(arg: &str) -> Option<String> {
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    if let Some(i) = arg.find("REC->") {
        return Some(ident(&arg[i + 5..])).filter(|s| !s.is_empty());
    }
    for f in ["__get_str(", "__get_rel_str("] {
        if let Some(i) = arg.find(f) {
            return Some(ident(&arg[i + f.len()..])).filter(|s| !s.is_empty());
        }
    }
    None
}

/// Splits at commas outside parentheses and quotes.
fn split_args(s: &str) -> Vec<String> {
    let (mut out, mut cur, mut depth, mut quoted) = (Vec::new(), String::new(), 0i32, false);
    for c in s.chars() {
        match c {
            '"' => quoted = !quoted,
            '(' | '{' | '[' if !quoted => depth += 1,
            ')' | '}' | ']' if !quoted => depth -= 1,
            ',' if depth == 0 && !quoted => {
                out.push(cur.trim().to_string());
                cur.clear();
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    if !cur.trim().is_empty() {
        out.push(cur.trim().to_string());
    }
    out
}

/// Checks that a name list is only `ftrace:` tracepoints.
pub fn split_names(list: &str) -> (Vec<String>, Vec<String>) {
    let (f, rest): (Vec<&str>, Vec<&str>) = list
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .partition(|p| p.starts_with("ftrace:"));
    (
        f.into_iter().map(str::to_string).collect(),
        rest.into_iter().map(str::to_string).collect(),
    )
}

/// Refuses a mix of `ftrace:` and other probes (one trace is either BPF or
/// ftrace).
pub fn check_alone(ftrace: &[String], others: &[String]) -> Result<()> {
    if !ftrace.is_empty() && !others.is_empty() {
        bail!(
            "ftrace: tracepoints run without BPF, in a tracefs instance of their own; trace {} \
             in another podscope trace (or use tp:SUBSYSTEM:EVENT for the BPF hook)",
            others.join(",")
        );
    }
    Ok(())
}

/// What an ftrace trace traces.
#[derive(Debug, Clone, Default)]
pub struct FtraceSpec {
    /// `ftrace:SUBSYSTEM:EVENT` (or bare) names.
    pub names: Vec<String>,
    /// Pods and containers; None: the host filter below.
    pub selection: Option<crate::select::PodSelection>,
    /// Wait for pods that do not exist yet.
    pub wait: bool,
    /// --pid (their threads, and what they fork).
    pub pids: Vec<u32>,
    /// --cgroup paths (their tasks, rescanned every second).
    pub cgroups: Vec<PathBuf>,
    /// Stop after this many records.
    pub max_events: Option<u64>,
    /// The node name events carry.
    pub node: String,
    /// The CRI endpoint; found by itself when None.
    pub runtime_endpoint: Option<String>,
    /// --filter, written to each event's ftrace `filter` file.
    pub filter: Option<String>,
    /// --ring-buffer-size: the instance's buffer per CPU (None: ftrace's
    /// default, 1408 KiB on x86_64).
    pub buffer_bytes: Option<u32>,
}

/// How an ftrace trace went.
#[derive(Debug, Default)]
pub struct FtraceEnd {
    /// Records written.
    pub written: u64,
    /// Events ftrace said it lost.
    pub lost: u64,
    /// Lines that matched no traced event.
    pub unparsed: u64,
    /// Records of tasks that had left /proc before they were read (no pod fields).
    pub unattributed: u64,
    /// Instances of dead podscope processes removed at the start.
    pub removed_stale: Vec<String>,
    /// The instance this trace used (removed now).
    pub instance: PathBuf,
    /// How long it ran.
    pub elapsed: std::time::Duration,
}

struct NoKernelFilter;

impl crate::enrich::KernelFilter for NoKernelFilter {
    fn allow_cgroup(&self, _id: u64) -> Result<(), podscope_bpf::Error> {
        Ok(())
    }
    fn deny_cgroup(&self, _id: u64) -> Result<(), podscope_bpf::Error> {
        Ok(())
    }
}

/// The thread ids of a process.
fn threads(pid: u32) -> Vec<u32> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Runs an ftrace trace into `sink` until `stop` says so, the records reach
/// `max_events`, or (for --pid) the processes are gone. `started` is told
/// the instance's directory once tracing is on.
pub fn run(
    spec: &FtraceSpec,
    sink: &mut dyn crate::format::Sink,
    stop: &dyn Fn() -> bool,
    started: &mut dyn FnMut(&Path, &[String]),
) -> Result<FtraceEnd> {
    use crate::enrich::PodIndex;
    let t0 = std::time::Instant::now();
    let mut end = FtraceEnd {
        removed_stale: clean_stale()?,
        ..FtraceEnd::default()
    };
    let store = crate::store::PodStore::new(spec.runtime_endpoint.clone());
    let (mut index, discovery) = PodIndex::new(
        store,
        spec.selection.clone(),
        spec.node.clone(),
        crate::enrich::REFRESH_PERIOD,
    )
    .context("finding the node's pods")?;
    if let Some(sel) = &spec.selection {
        if !spec.wait && (index.selected_pods() == 0 || sel.select(&discovery.pods).is_empty()) {
            return Err(sel.no_match(&discovery))
                .context("nothing to trace (add --wait to wait for matching pods)");
        }
    }
    let host_all = spec.selection.is_none() && spec.pids.is_empty() && spec.cgroups.is_empty();
    let mut inst = Instance::create(&spec.names, spec.filter.as_deref())?;
    if let Some(b) = spec.buffer_bytes {
        let kb = inst.set_buffer_bytes(b)?;
        eprintln!(
            "podscope: ftrace: the instance's buffer is {kb} KiB per CPU (asked for {} KiB; ftrace rounds up to whole pages of its own)",
            u64::from(b).div_ceil(1024)
        );
    }
    for w in &inst.warnings {
        eprintln!("podscope: warning: {w}");
    }
    end.instance = inst.dir().to_path_buf();
    let tasks = |index: &PodIndex| -> Vec<u32> {
        let mut tids = Vec::new();
        if spec.selection.is_some() {
            let paths: Vec<String> = index
                .selected_pod_list()
                .flat_map(|p| {
                    p.containers
                        .iter()
                        .filter_map(|c| c.cgroup_path.clone())
                        .chain(p.cgroup_path.clone())
                })
                .collect();
            tids.extend(cgroup_tids(&paths));
        }
        for p in &spec.pids {
            tids.extend(threads(*p));
        }
        let cg: Vec<String> = spec
            .cgroups
            .iter()
            .map(|c| c.display().to_string())
            .collect();
        tids.extend(cgroup_tids(&cg));
        tids
    };
    let mut on = false;
    let mut last_scan = std::time::Instant::now() - std::time::Duration::from_secs(2);
    let mut batch = Vec::new();
    let mut reported_lost = 0;
    loop {
        if last_scan.elapsed() >= std::time::Duration::from_secs(1) {
            last_scan = std::time::Instant::now();
            index.tick(&NoKernelFilter);
            inst.add_pids(tasks(&index))?;
            // An empty set_event_pid traces every task: on only once some
            // task is in (or for a trace of everything).
            if !on && (host_all || !inst.pids.is_empty()) {
                inst.start()?;
                on = true;
                started(inst.dir(), &end.removed_stale);
            }
            if inst.lost > reported_lost {
                sink.lost(
                    podscope_model::ProbeKind::Tracepoint,
                    inst.lost - reported_lost,
                    inst.lost,
                )?;
                reported_lost = inst.lost;
            }
            if !spec.pids.is_empty() && spec.pids.iter().all(|p| !alive(*p)) {
                // Still read what they left.
                inst.read(&mut batch)?;
                deliver(&mut index, &mut batch, sink, spec, &mut end)?;
                break;
            }
        }
        inst.read(&mut batch)?;
        deliver(&mut index, &mut batch, sink, spec, &mut end)?;
        sink.flush()?;
        if stop() || spec.max_events.is_some_and(|m| end.written >= m) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    inst.read(&mut batch)?;
    deliver(&mut index, &mut batch, sink, spec, &mut end)?;
    end.lost = inst.lost;
    end.unparsed = inst.unparsed;
    end.elapsed = t0.elapsed();
    let stats = [podscope_bpf::ProbeStats {
        probe: podscope_model::ProbeKind::Tracepoint,
        events: end.written,
        lost: end.lost,
        map_full: 0,
        decode_errors: end.unparsed,
        queue_full: 0,
    }];
    inst.close()?;
    sink.summary(end.elapsed.as_nanos() as u64, &stats)?;
    sink.flush()?;
    Ok(end)
}

fn deliver(
    index: &mut crate::enrich::PodIndex,
    batch: &mut Vec<Event>,
    sink: &mut dyn crate::format::Sink,
    spec: &FtraceSpec,
    end: &mut FtraceEnd,
) -> Result<()> {
    if batch.is_empty() {
        return Ok(());
    }
    // A task gone from /proc before its record was read has no cgroup: it
    // passed set_event_pid, so it is written, without pod fields.
    let (known, unknown): (Vec<Event>, Vec<Event>) = std::mem::take(batch)
        .into_iter()
        .partition(|e| e.cgroup_id != 0);
    end.unattributed += unknown.len() as u64;
    let mine: Vec<Event> = known
        .into_iter()
        .filter(|e| spec.selection.is_none() || !index.rejects(e.cgroup_id))
        .collect();
    let mut out = index.process(mine);
    out.extend(unknown);
    out.sort_by_key(|e| e.timestamp);
    for e in out {
        if spec.max_events.is_some_and(|m| end.written >= m) {
            break;
        }
        sink.event(&e)?;
        end.written += 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_pipe_lines_split_into_their_parts() {
        let l = parse_line(
            "          my cat-1234    [001] d..2.  5678.123456: sched_process_fork: comm=sh pid=1 child_comm=sh child_pid=2",
        )
        .unwrap();
        assert_eq!(l.comm, "my cat");
        assert_eq!(l.tid, 1234);
        assert_eq!(l.mono_ns, 5_678_123_456_000);
        assert_eq!(l.event, "sched_process_fork");
        assert_eq!(l.rest, "comm=sh pid=1 child_comm=sh child_pid=2");
        // Without the flags column.
        let l = parse_line("sh-7 [000] 1.5: sys_openat(dfd: ffffff9c, filename: 7f00)").unwrap();
        assert_eq!(
            (l.tid, l.mono_ns, l.event.as_str()),
            (7, 1_500_000_000, "sys_enter_openat")
        );
        assert_eq!(l.rest, "dfd: ffffff9c, filename: 7f00");
        let l = parse_line("sh-7 [000] 1.5: sys_openat -> 0xfffffffffffffffe").unwrap();
        assert_eq!(
            (l.event.as_str(), l.rest.as_str()),
            ("sys_exit_openat", "0xfffffffffffffffe")
        );
        assert!(parse_line("CPU:1 [LOST 3 EVENTS]").is_none());
    }

    #[test]
    fn print_fmt_maps_text_back_to_fields() {
        let format = "name: sched_process_fork\nID: 1\nformat:\n\
            \tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\
            \tfield:__data_loc char[] parent_comm;\toffset:8;\tsize:4;\tsigned:0;\n\
            \tfield:pid_t parent_pid;\toffset:12;\tsize:4;\tsigned:1;\n\
            \tfield:__data_loc char[] child_comm;\toffset:16;\tsize:4;\tsigned:0;\n\
            \tfield:pid_t child_pid;\toffset:20;\tsize:4;\tsigned:1;\n\n\
            print fmt: \"comm=%s pid=%d child_comm=%s child_pid=%d\", __get_str(parent_comm), REC->parent_pid, __get_str(child_comm), REC->child_pid\n";
        let f = Arc::new(Format::parse("sched:sched_process_fork", format).unwrap());
        let p = Parser::new(f, format);
        let got = p.fields("comm=my sh pid=10 child_comm=sh child_pid=11");
        assert_eq!(got.get("parent_comm"), Some(&TpValue::Str("my sh".into())));
        assert_eq!(got.get("parent_pid"), Some(&TpValue::Int(10)));
        assert_eq!(got.get("child_pid"), Some(&TpValue::Int(11)));
        // Text the format does not match is kept whole.
        assert_eq!(
            p.fields("something else").get("text"),
            Some(&TpValue::Str("something else".into()))
        );
    }
}
