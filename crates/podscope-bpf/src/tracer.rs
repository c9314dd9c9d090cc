//! The running tracer: loads the chosen probes with one shared filter, polls
//! their ring buffers, and hands out decoded events and loss counts.

use std::cell::RefCell;
use std::os::fd::AsFd;
use std::rc::Rc;
use std::time::{Duration, Instant};

use libbpf_rs::{MapCore, MapFlags, MapHandle, RingBuffer, RingBufferBuilder};
use podscope_model::{Event, Implementation, ProbeKind};

use crate::cgroup::{CgroupChange, Watcher};
use crate::decode::Clock;
use crate::load::{read_stat, start_log_capture, LoadSettings, LoadedProbe};
use crate::Error;

/// Which tasks the kernel lets through. Filters combine with AND; a `None`
/// filter is off. An enabled filter with no entries lets nothing through until
/// entries are added (that is how pod tracing starts before pods exist).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// cgroup v2 ids; a task matches if its cgroup or any ancestor is listed.
    pub cgroups: Option<Vec<u64>>,
    /// Process (thread-group) ids.
    pub pids: Option<Vec<u32>>,
    /// Exact task command name (at most 15 bytes).
    pub comm: Option<String>,
}

/// Everything needed to start tracing.
#[derive(Debug, Clone)]
pub struct TraceOptions {
    /// Probes to load, in order.
    pub probes: Vec<ProbeKind>,
    /// The in-kernel filter.
    pub filter: Filter,
    /// Ring buffer size per probe in bytes (a power of two, at least 4096).
    pub ring_buffer_bytes: u32,
    /// Pending bytes that trigger a consumer wakeup; smaller means lower
    /// latency and more overhead. Defaults to a quarter of the ring.
    pub wakeup_bytes: Option<u64>,
    /// How often aggregating probes (cache) report.
    pub interval: Duration,
    /// Leave this process's own activity out (default), so the tracer's
    /// reads and writes cannot feed back into what it traces.
    pub exclude_self: bool,
    /// Watch cgroup v2 creation/removal (see [`Tracer::take_cgroup_changes`]).
    pub watch_cgroups: Option<CgroupWatch>,
    /// Use only the named implementation for these probes (tests, and
    /// comparing implementations on one kernel); others choose the best.
    pub implementations: Vec<(ProbeKind, String)>,
    /// http probe: the first bytes of each socket message copied to user
    /// space for parsing (at most [`crate::HTTP_MAX_CAPTURE_BYTES`]).
    pub http_capture_bytes: u32,
}

/// What the cgroup watcher does.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CgroupWatch {
    /// Admit new pod cgroups into the filter in the kernel, as pending, the
    /// moment they are created; user space then keeps or removes them.
    pub admit_new_pods: bool,
    /// Cgroup ids whose new children are kubelet QoS or pod cgroups (the v2
    /// root, kubepods, its QoS classes); kubelet cgroups created later below
    /// them are followed by the kernel.
    pub parents: Vec<u64>,
}

fn allow(map: &MapHandle, id: u64) -> Result<(), Error> {
    map.update(&id.to_ne_bytes(), &[1], MapFlags::ANY)
        .map_err(Error::runtime(format!("adding cgroup {id} to the filter")))
}

fn deny(map: &MapHandle, id: u64) -> Result<(), Error> {
    match map.delete(&id.to_ne_bytes()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == libbpf_rs::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::runtime(format!(
            "removing cgroup {id} from the filter"
        ))(e)),
    }
}

impl Default for TraceOptions {
    fn default() -> Self {
        TraceOptions {
            probes: Vec::new(),
            filter: Filter::default(),
            ring_buffer_bytes: 1 << 20,
            wakeup_bytes: None,
            interval: Duration::from_secs(1),
            exclude_self: true,
            watch_cgroups: None,
            implementations: Vec::new(),
            http_capture_bytes: 1024,
        }
    }
}

/// Per-probe counts since the tracer started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeStats {
    /// The probe.
    pub probe: ProbeKind,
    /// Events delivered to user space.
    pub events: u64,
    /// Events lost in the kernel because the ring buffer was full.
    pub lost: u64,
    /// Events lost because an in-kernel tracking map was full.
    pub map_full: u64,
    /// Records user space could not decode.
    pub decode_errors: u64,
}

impl ProbeStats {
    /// Everything that did not reach the consumer.
    pub fn total_lost(&self) -> u64 {
        self.lost + self.map_full + self.decode_errors
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    events: u64,
    decode_errors: u64,
}

/// A probe that could not be loaded while others were.
#[derive(Debug)]
pub struct ProbeFailure {
    /// The probe.
    pub probe: ProbeKind,
    /// Why (every implementation tried, or the kernel's refusal).
    pub error: Error,
}

/// Loaded, attached probes. Dropping it detaches everything.
pub struct Tracer {
    // Declared first so it is dropped (and unmaps the rings) before the probes.
    ring: Option<RingBuffer<'static>>,
    probes: Vec<Box<dyn LoadedProbe>>,
    implementations: Vec<&'static Implementation>,
    failed: Vec<ProbeFailure>,
    watcher: Option<Watcher>,
    changes: Rc<RefCell<Vec<CgroupChange>>>,
    queue: Rc<RefCell<Vec<Event>>>,
    counts: Rc<RefCell<Vec<Counts>>>,
    filter_cgroups: MapHandle,
    filter_pids: MapHandle,
    clock: Clock,
    /// How probes are loaded, for probes added later ([`Tracer::add_probes`]).
    saved: Saved,
    interval: Duration,
    last_collect: Instant,
    attach_time: Duration,
}

impl std::fmt::Debug for Tracer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracer")
            .field(
                "probes",
                &self.probes.iter().map(|p| p.kind()).collect::<Vec<_>>(),
            )
            .field("attach_time", &self.attach_time)
            .finish()
    }
}

fn comm_bytes(comm: &str) -> Result<[i8; 16], Error> {
    if comm.is_empty() || comm.len() > 15 || comm.contains('\0') {
        return Err(Error::InvalidOption(format!(
            "--comm '{comm}' cannot match: the kernel keeps at most 15 bytes of a command name \
             (use the first 15 characters)"
        )));
    }
    let mut out = [0i8; 16];
    for (o, b) in out.iter_mut().zip(comm.bytes()) {
        *o = b as i8;
    }
    Ok(out)
}

/// The load settings of a running tracer, for probes added later.
#[derive(Debug, Clone)]
struct Saved {
    filter_by_cgroup: bool,
    filter_by_pid: bool,
    filter_comm: Option<[i8; 16]>,
    ring_bytes: u32,
    wakeup_bytes: u64,
    self_tgid: u32,
    ancestor_helper: bool,
    http_capture_bytes: u32,
    implementations: Vec<(ProbeKind, String)>,
}

/// One ring-buffer reader over every probe's ring and the watcher's; built
/// again when probes are added or removed.
fn build_ring(
    probes: &[Box<dyn LoadedProbe>],
    watcher: Option<&Watcher>,
    queue: &Rc<RefCell<Vec<Event>>>,
    counts: &Rc<RefCell<Vec<Counts>>>,
    changes: &Rc<RefCell<Vec<CgroupChange>>>,
    clock: Clock,
) -> Result<Option<RingBuffer<'static>>, Error> {
    let mut builder = RingBufferBuilder::new();
    let mut any_ring = false;
    for (i, probe) in probes.iter().enumerate() {
        let Some(map) = probe.ring() else { continue };
        let decode = probe.decoder();
        let queue = queue.clone();
        let counts = counts.clone();
        builder
            .add(map, move |data: &[u8]| {
                match decode(data, &clock) {
                    Some(ev) => {
                        counts.borrow_mut()[i].events += 1;
                        queue.borrow_mut().push(ev);
                    }
                    None => counts.borrow_mut()[i].decode_errors += 1,
                }
                0
            })
            .map_err(Error::runtime("setting up the ring buffer"))?;
        any_ring = true;
    }
    if let Some(w) = watcher {
        let changes = changes.clone();
        builder
            .add(w.ring(), move |data: &[u8]| {
                changes
                    .borrow_mut()
                    .push(crate::cgroup::decode(data, &clock));
                0
            })
            .map_err(Error::runtime("setting up the cgroup watcher ring"))?;
        any_ring = true;
    }
    if !any_ring {
        return Ok(None);
    }
    builder
        .build()
        .map(Some)
        .map_err(Error::runtime("creating the ring buffer reader"))
}

impl Tracer {
    /// Loads and attaches `opts.probes`, each with the best implementation
    /// this kernel accepts. A probe that cannot load at all does not stop the
    /// others: it is listed in [`Tracer::failed`]. Fails only if no probe
    /// loads (then with the first probe's error) or on a setting that cannot
    /// work; on error nothing stays attached.
    pub fn new(opts: &TraceOptions) -> Result<Tracer, Error> {
        let started = Instant::now();
        if opts.probes.is_empty() {
            return Err(Error::InvalidOption("no probes selected".into()));
        }
        let ring = opts.ring_buffer_bytes;
        if ring < 4096 || !ring.is_power_of_two() {
            return Err(Error::InvalidOption(format!(
                "ring buffer size {ring} is not a power of two of at least 4096 bytes (try 262144 or 1048576)"
            )));
        }
        crate::sys::require_btf()?;
        crate::sys::tracefs_events()?;
        start_log_capture();

        let mut settings = LoadSettings {
            filter_by_cgroup: opts.filter.cgroups.is_some(),
            filter_by_pid: opts.filter.pids.is_some(),
            filter_comm: opts.filter.comm.as_deref().map(comm_bytes).transpose()?,
            ring_bytes: ring,
            wakeup_bytes: opts.wakeup_bytes.unwrap_or(ring as u64 / 4),
            self_tgid: if opts.exclude_self {
                std::process::id()
            } else {
                0
            },
            ancestor_helper: crate::sys::has_ancestor_cgroup_helper(),
            http_capture_bytes: opts.http_capture_bytes,
            shared_filters: None,
        };

        // The first probe that loads creates the filter maps; the others reuse
        // them, so one update filters every probe.
        let mut failed = Vec::new();
        let mut rest = opts.probes.iter();
        let (first, first_imp) = loop {
            let Some(kind) = rest.next() else {
                let first = failed.into_iter().next().map(|f: ProbeFailure| f.error);
                return Err(first.expect("at least one probe was tried"));
            };
            match load_probe(*kind, &settings, forced(opts, *kind)) {
                Ok(p) => break p,
                Err(error) => failed.push(ProbeFailure {
                    probe: *kind,
                    error,
                }),
            }
        };
        let dup = |m: &libbpf_rs::MapMut<'static>| {
            MapHandle::try_from(m).map_err(Error::runtime("sharing the filter map"))
        };
        let filter_cgroups = dup(first.filter_cgroups())?;
        let filter_pids = dup(first.filter_pids())?;
        let mut probes: Vec<Box<dyn LoadedProbe>> = vec![first];
        let mut implementations = vec![first_imp];
        settings.shared_filters = Some((filter_cgroups.as_fd(), filter_pids.as_fd()));
        for kind in rest {
            match load_probe(*kind, &settings, forced(opts, *kind)) {
                Ok((p, imp)) => {
                    probes.push(p);
                    implementations.push(imp);
                }
                Err(error) => failed.push(ProbeFailure {
                    probe: *kind,
                    error,
                }),
            }
        }

        let watcher = match &opts.watch_cgroups {
            Some(w) => {
                let watcher = Watcher::load(&settings, w.admit_new_pods)?;
                for id in &w.parents {
                    watcher.watch_parent(*id)?;
                }
                Some(watcher)
            }
            None => None,
        };

        let tracer_queue = Rc::new(RefCell::new(Vec::new()));
        let counts = Rc::new(RefCell::new(vec![Counts::default(); probes.len()]));
        let clock = Clock::new();
        let changes = Rc::new(RefCell::new(Vec::new()));
        let ring = build_ring(
            &probes,
            watcher.as_ref(),
            &tracer_queue,
            &counts,
            &changes,
            clock,
        )?;
        let saved = Saved {
            filter_by_cgroup: settings.filter_by_cgroup,
            filter_by_pid: settings.filter_by_pid,
            filter_comm: settings.filter_comm,
            ring_bytes: settings.ring_bytes,
            wakeup_bytes: settings.wakeup_bytes,
            self_tgid: settings.self_tgid,
            ancestor_helper: settings.ancestor_helper,
            http_capture_bytes: settings.http_capture_bytes,
            implementations: opts.implementations.clone(),
        };

        let tracer = Tracer {
            ring,
            probes,
            implementations,
            failed,
            watcher,
            changes,
            queue: tracer_queue,
            counts,
            filter_cgroups,
            filter_pids,
            clock,
            saved,
            interval: opts.interval,
            last_collect: Instant::now(),
            attach_time: started.elapsed(),
        };
        for id in opts.filter.cgroups.iter().flatten() {
            tracer.allow_cgroup(*id)?;
        }
        for pid in opts.filter.pids.iter().flatten() {
            tracer.allow_pid(*pid)?;
        }
        Ok(tracer)
    }

    /// Loads and attaches more probes into the running tracer, sharing its
    /// filter (a node's sessions need more probes). Probes already loaded are
    /// skipped; one that cannot load is returned with why, the others run.
    /// Events already read are kept.
    pub fn add_probes(&mut self, kinds: &[ProbeKind]) -> Result<Vec<ProbeFailure>, Error> {
        let s = &self.saved;
        let settings = LoadSettings {
            filter_by_cgroup: s.filter_by_cgroup,
            filter_by_pid: s.filter_by_pid,
            filter_comm: s.filter_comm,
            ring_bytes: s.ring_bytes,
            wakeup_bytes: s.wakeup_bytes,
            self_tgid: s.self_tgid,
            ancestor_helper: s.ancestor_helper,
            http_capture_bytes: s.http_capture_bytes,
            shared_filters: Some((self.filter_cgroups.as_fd(), self.filter_pids.as_fd())),
        };
        let mut failed = Vec::new();
        let mut added = Vec::new();
        for kind in kinds {
            if self.probes.iter().any(|p| p.kind() == *kind)
                || added
                    .iter()
                    .any(|(p, _): &(Box<dyn LoadedProbe>, _)| p.kind() == *kind)
            {
                continue;
            }
            let only = s
                .implementations
                .iter()
                .find(|(p, _)| p == kind)
                .map(|(_, n)| n.as_str());
            match load_probe(*kind, &settings, only) {
                Ok(p) => added.push(p),
                Err(error) => failed.push(ProbeFailure {
                    probe: *kind,
                    error,
                }),
            }
        }
        if added.is_empty() {
            return Ok(failed);
        }
        self.drain_rings();
        for (p, imp) in added {
            self.probes.push(p);
            self.implementations.push(imp);
            self.counts.borrow_mut().push(Counts::default());
        }
        self.rebuild_ring()?;
        Ok(failed)
    }

    /// Detaches and unloads these probes (nothing needs them any more); the
    /// others keep running. What their rings held is read first.
    pub fn remove_probes(&mut self, kinds: &[ProbeKind]) -> Result<(), Error> {
        if !self.probes.iter().any(|p| kinds.contains(&p.kind())) {
            return Ok(());
        }
        self.drain_rings();
        // The reader refers to the rings: gone before the probes are.
        self.ring = None;
        let mut keep = Vec::new();
        let mut imps = Vec::new();
        let mut counts = Vec::new();
        let old_counts = self.counts.borrow().clone();
        for ((p, imp), c) in std::mem::take(&mut self.probes)
            .into_iter()
            .zip(std::mem::take(&mut self.implementations))
            .zip(old_counts)
        {
            if !kinds.contains(&p.kind()) {
                keep.push(p);
                imps.push(imp);
                counts.push(c);
            }
        }
        self.probes = keep;
        self.implementations = imps;
        *self.counts.borrow_mut() = counts;
        self.rebuild_ring()
    }

    fn drain_rings(&mut self) {
        if let Some(ring) = &self.ring {
            ring.consume_raw();
        }
    }

    fn rebuild_ring(&mut self) -> Result<(), Error> {
        self.ring = None;
        self.ring = build_ring(
            &self.probes,
            self.watcher.as_ref(),
            &self.queue,
            &self.counts,
            &self.changes,
            self.clock,
        )?;
        Ok(())
    }

    /// How long loading and attaching took.
    pub fn attach_time(&self) -> Duration {
        self.attach_time
    }

    /// The loaded probes.
    pub fn probes(&self) -> Vec<ProbeKind> {
        self.probes.iter().map(|p| p.kind()).collect()
    }

    /// The implementation each loaded probe uses, in [`Tracer::probes`] order.
    pub fn implementations(&self) -> Vec<(ProbeKind, &'static Implementation)> {
        self.probes
            .iter()
            .zip(&self.implementations)
            .map(|(p, i)| (p.kind(), *i))
            .collect()
    }

    /// Probes that were asked for but could not be loaded, and why.
    pub fn failed(&self) -> &[ProbeFailure] {
        &self.failed
    }

    /// Lets a cgroup (and every cgroup below it) through the filter, live.
    pub fn allow_cgroup(&self, id: u64) -> Result<(), Error> {
        allow(&self.filter_cgroups, id)
    }

    /// Stops letting a cgroup through.
    pub fn deny_cgroup(&self, id: u64) -> Result<(), Error> {
        deny(&self.filter_cgroups, id)
    }

    /// cgroup v2 directories created or removed since the last call (needs
    /// [`TraceOptions::watch_cgroups`]); they arrive with the next poll.
    pub fn take_cgroup_changes(&mut self) -> Vec<CgroupChange> {
        std::mem::take(&mut *self.changes.borrow_mut())
    }

    /// Cgroup changes the watcher could not report (ring or map full).
    pub fn watcher_lost(&self) -> u64 {
        self.watcher.as_ref().map_or(0, Watcher::lost)
    }

    /// Lets a process through the pid filter, live.
    pub fn allow_pid(&self, pid: u32) -> Result<(), Error> {
        self.filter_pids
            .update(&pid.to_ne_bytes(), &[1], MapFlags::ANY)
            .map_err(Error::runtime(format!("adding pid {pid} to the filter")))
    }

    /// Waits up to `timeout` for events and appends everything pending to
    /// `out`. Returns how many events were appended.
    pub fn poll(&mut self, timeout: Duration, out: &mut Vec<Event>) -> Result<usize, Error> {
        let before = out.len();
        if let Some(ring) = &self.ring {
            // Wakeups are batched in the kernel, so after the wait drain every
            // ring whether or not it signalled.
            let rc = ring.poll_raw(timeout);
            if rc < 0 && rc != -libc::EINTR {
                return Err(Error::Io {
                    what: "polling the ring buffers".into(),
                    source: std::io::Error::from_raw_os_error(-rc),
                });
            }
            let rc = ring.consume_raw();
            if rc < 0 && rc != -libc::EINTR {
                return Err(Error::Io {
                    what: "reading the ring buffers".into(),
                    source: std::io::Error::from_raw_os_error(-rc),
                });
            }
        } else {
            std::thread::sleep(timeout.min(self.interval));
        }
        {
            // Each probe has its own ring; merge them into time order.
            let mut q = self.queue.borrow_mut();
            q.sort_by_key(|e| e.timestamp);
            out.append(&mut q);
        }
        if self.last_collect.elapsed() >= self.interval {
            self.collect(out)?;
        }
        Ok(out.len() - before)
    }

    /// Drains what is still buffered (ring buffers and aggregated counts), e.g. before exit.
    pub fn flush(&mut self, out: &mut Vec<Event>) -> Result<usize, Error> {
        let before = out.len();
        if let Some(ring) = &self.ring {
            ring.consume_raw();
        }
        {
            let mut q = self.queue.borrow_mut();
            q.sort_by_key(|e| e.timestamp);
            out.append(&mut q);
        }
        self.collect(out)?;
        Ok(out.len() - before)
    }

    fn collect(&mut self, out: &mut Vec<Event>) -> Result<(), Error> {
        self.last_collect = Instant::now();
        let counts = self.counts.clone();
        for (i, probe) in self.probes.iter_mut().enumerate() {
            let before = out.len();
            probe.collect(&self.clock, out)?;
            counts.borrow_mut()[i].events += (out.len() - before) as u64;
        }
        Ok(())
    }

    /// Probe-specific kernel counters so far (e.g. the http probe's
    /// connections sniffed as another protocol, whose payload is not copied).
    pub fn counters(&self) -> Vec<(ProbeKind, &'static str, u64)> {
        self.probes
            .iter()
            .flat_map(|p| {
                let kind = p.kind();
                p.counters().into_iter().map(move |(n, v)| (kind, n, v))
            })
            .collect()
    }

    /// Events and losses per probe so far.
    pub fn stats(&self) -> Vec<ProbeStats> {
        let counts = self.counts.borrow();
        self.probes
            .iter()
            .zip(counts.iter())
            .map(|(p, c)| ProbeStats {
                probe: p.kind(),
                events: c.events,
                lost: read_stat(p.stats_map(), 0),
                map_full: read_stat(p.stats_map(), 1),
                decode_errors: c.decode_errors,
            })
            .collect()
    }
}

fn forced(opts: &TraceOptions, kind: ProbeKind) -> Option<&str> {
    opts.implementations
        .iter()
        .find(|(p, _)| *p == kind)
        .map(|(_, name)| name.as_str())
}

/// Loads a probe with the first of its implementations whose hooks exist
/// and that the kernel accepts (fentry, for one, is refused on some kernels).
fn load_probe(
    kind: ProbeKind,
    settings: &LoadSettings,
    only: Option<&str>,
) -> Result<(Box<dyn LoadedProbe>, &'static Implementation), Error> {
    if let Some(name) = only {
        if !kind.implementations().iter().any(|i| i.name == name) {
            let known: Vec<&str> = kind.implementations().iter().map(|i| i.name).collect();
            return Err(Error::InvalidOption(format!(
                "probe '{kind}' has no implementation '{name}'; it has: {}",
                known.join(", ")
            )));
        }
    }
    let mut skipped = Vec::new();
    let mut refused = Vec::new();
    for imp in kind
        .implementations()
        .iter()
        .filter(|i| only.is_none_or(|n| n == i.name))
    {
        if let Err(reason) = crate::sys::implementation_support(imp) {
            skipped.push(format!("{}: {reason}", imp.name));
            continue;
        }
        let loaded = match kind {
            ProbeKind::Exec => crate::exec::load(settings),
            ProbeKind::Exit => crate::exit::load(settings),
            ProbeKind::Tcp => crate::tcp::load(settings),
            ProbeKind::Bio => crate::bio::load(settings, imp),
            ProbeKind::Cache => crate::cache::load(settings, imp),
            ProbeKind::Open => crate::open::load(settings),
            ProbeKind::Http => crate::http::load(settings),
            ProbeKind::Dns => crate::dns::load(settings),
        };
        match loaded {
            Ok(p) => return Ok((p, imp)),
            Err(e) => refused.push((imp.name, e)),
        }
    }
    // One implementation that had its hooks and was refused: its error (with
    // the verifier log) says it best.
    if refused.len() == 1 && skipped.is_empty() {
        return Err(refused.pop().unwrap().1);
    }
    let single = kind.implementations().len() == 1 || only.is_some();
    let mut reasons: Vec<String> = skipped
        .into_iter()
        .map(|r| {
            if single {
                r.split_once(": ").map_or(r.clone(), |(_, r)| r.to_string())
            } else {
                r
            }
        })
        .collect();
    reasons.extend(
        refused
            .into_iter()
            .map(|(name, e)| format!("{name}: the kernel refused it ({e})")),
    );
    Err(Error::Unsupported {
        probe: kind,
        reason: reasons.join("; "),
    })
}
