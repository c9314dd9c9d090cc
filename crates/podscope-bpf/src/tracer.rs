//! The running tracer: loads the chosen probes with one shared filter, polls
//! their ring buffers, and hands out decoded events and loss counts.

use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use libbpf_rs::{MapCore, MapFlags, MapHandle};
use podscope_model::{Event, Implementation, ProbeKind};

use crate::cgroup::{CgroupChange, Watcher};
use crate::decode::Clock;
use crate::drain::{Batch, Drain, Record, Ring, Source};
use crate::load::{read_stat, start_log_capture, LoadSettings, LoadedProbe};
use crate::rings::{ring_bytes, RingSize};
use crate::syscalls::SyscallOptions;
use crate::tracepoint::TracepointOptions;
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
    /// Ring buffer size per probe in bytes (a power of two, at least 4096),
    /// or 0: sized per probe to hold `ring_budget` at its expected peak
    /// rate ([`crate::auto_ring_bytes`]).
    pub ring_buffer_bytes: u32,
    /// With `ring_buffer_bytes` 0: how long each ring must hold events at its
    /// probe's expected peak rate while user space is not reading.
    pub ring_budget: Duration,
    /// The bound of the user-space queue between the drain thread and
    /// [`Tracer::poll`], in record bytes; records beyond it are counted per
    /// probe in [`ProbeStats::queue_full`].
    pub queue_bytes: usize,
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
    /// syscalls probe: which calls, errors only, stream or summary.
    pub syscalls: SyscallOptions,
    /// tracepoint probe: which tracepoints, and the filter.
    pub tracepoints: TracepointOptions,
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
            ring_budget: crate::rings::DEFAULT_RING_BUDGET,
            queue_bytes: DEFAULT_QUEUE_BYTES,
            wakeup_bytes: None,
            interval: Duration::from_secs(1),
            exclude_self: true,
            watch_cgroups: None,
            implementations: Vec::new(),
            http_capture_bytes: 1024,
            syscalls: SyscallOptions::default(),
            tracepoints: TracepointOptions::default(),
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
    /// Records read from the kernel ring but dropped because the user-space
    /// queue (see [`TraceOptions::queue_bytes`]) was full: the consumer
    /// (decode, enrichment, output) fell behind for longer than it holds.
    pub queue_full: u64,
}

impl ProbeStats {
    /// Everything that did not reach the consumer.
    pub fn total_lost(&self) -> u64 {
        self.lost + self.map_full + self.decode_errors + self.queue_full
    }
}

/// The user-space queue bound by default: 64 MiB of records, about 200,000
/// open events, a third of a second at 600,000 events/s.
pub const DEFAULT_QUEUE_BYTES: usize = 64 << 20;

#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    events: u64,
    decode_errors: u64,
    /// queue_full of drain threads that have ended (add/remove probes).
    queue_full: u64,
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
    // Declared first so it is dropped first: the drain thread stops and is
    // joined before the probes detach. (It reads the rings through its own
    // duplicates of their fds, so their memory stays valid until it is gone
    // whatever the order.)
    drain: Option<Drain>,
    probes: Vec<Box<dyn LoadedProbe>>,
    implementations: Vec<&'static Implementation>,
    /// Each probe's ring size in bytes (0: no ring), in `probes` order.
    ring_sizes: Vec<u32>,
    failed: Vec<ProbeFailure>,
    watcher: Option<Watcher>,
    changes: Vec<CgroupChange>,
    /// Decoded events not yet handed out.
    queue: Vec<Event>,
    counts: Vec<Counts>,
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
    ring: RingSize,
    wakeup_bytes: Option<u64>,
    queue_bytes: usize,
    self_tgid: u32,
    ancestor_helper: bool,
    http_capture_bytes: u32,
    implementations: Vec<(ProbeKind, String)>,
    syscalls: SyscallOptions,
    tracepoints: TracepointOptions,
}

impl Saved {
    /// How a probe loaded into the running tracer is set up: these
    /// settings, sharing the tracer's filter maps (ring sizes per probe
    /// come from [`for_probe`]).
    fn settings<'a>(&self, cgroups: &'a MapHandle, pids: &'a MapHandle) -> LoadSettings<'a> {
        LoadSettings {
            filter_by_cgroup: self.filter_by_cgroup,
            filter_by_pid: self.filter_by_pid,
            filter_comm: self.filter_comm,
            ring_bytes: 0,
            wakeup_bytes: 0,
            self_tgid: self.self_tgid,
            ancestor_helper: self.ancestor_helper,
            http_capture_bytes: self.http_capture_bytes,
            shared_filters: Some((cgroups.as_fd(), pids.as_fd())),
        }
    }
}

/// The settings to load `kind` with: its ring size and wakeup threshold.
fn for_probe<'a>(
    base: &LoadSettings<'a>,
    kind: ProbeKind,
    ring: RingSize,
    wakeup: Option<u64>,
) -> LoadSettings<'a> {
    let bytes = ring_bytes(kind, ring);
    LoadSettings {
        ring_bytes: bytes,
        wakeup_bytes: wakeup.unwrap_or(bytes as u64 / 4),
        ..*base
    }
}

/// The drain thread over every probe's ring and the watcher's; started
/// again when probes are added or removed.
fn start_drain(
    probes: &[Box<dyn LoadedProbe>],
    watcher: Option<&Watcher>,
    clock: Clock,
    queue_bytes: usize,
) -> Result<Option<Drain>, Error> {
    let dup = |m: &libbpf_rs::MapMut<'static>| {
        MapHandle::try_from(m).map_err(Error::runtime("sharing a ring buffer map"))
    };
    let mut rings = Vec::new();
    for (i, probe) in probes.iter().enumerate() {
        let Some(map) = probe.ring() else { continue };
        rings.push(Ring {
            source: Source::Probe(i),
            map: dup(map)?,
            decode: Some(probe.decoder()),
        });
    }
    if let Some(w) = watcher {
        rings.push(Ring {
            source: Source::Watcher,
            map: dup(w.ring())?,
            decode: None,
        });
    }
    if rings.is_empty() {
        return Ok(None);
    }
    Drain::start(rings, probes.len(), queue_bytes, clock).map(Some)
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
        let ring = match opts.ring_buffer_bytes {
            0 => RingSize::Budget(opts.ring_budget),
            n if n < 4096 || !n.is_power_of_two() => {
                return Err(Error::InvalidOption(format!(
                    "ring buffer size {n} is not a power of two of at least 4096 bytes (try 262144 or 1048576)"
                )))
            }
            n => RingSize::Bytes(n),
        };
        if let RingSize::Budget(b) = ring {
            if b.is_zero() {
                return Err(Error::InvalidOption(
                    "a ring budget of 0 holds nothing; give e.g. 50ms".into(),
                ));
            }
        }
        crate::sys::require_btf()?;
        crate::sys::tracefs_events()?;
        start_log_capture();

        let mut settings = LoadSettings {
            filter_by_cgroup: opts.filter.cgroups.is_some(),
            filter_by_pid: opts.filter.pids.is_some(),
            filter_comm: opts.filter.comm.as_deref().map(comm_bytes).transpose()?,
            ring_bytes: 0,
            wakeup_bytes: 0,
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
            let s = for_probe(&settings, *kind, ring, opts.wakeup_bytes);
            match load_probe(
                *kind,
                &s,
                forced(opts, *kind),
                &opts.syscalls,
                &opts.tracepoints,
            ) {
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
            let s = for_probe(&settings, *kind, ring, opts.wakeup_bytes);
            match load_probe(
                *kind,
                &s,
                forced(opts, *kind),
                &opts.syscalls,
                &opts.tracepoints,
            ) {
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

        let counts = vec![Counts::default(); probes.len()];
        let clock = Clock::new();
        let queue_bytes = opts.queue_bytes.max(4096);
        let drain = start_drain(&probes, watcher.as_ref(), clock, queue_bytes)?;
        let ring_sizes = probes
            .iter()
            .map(|p| ring_size_of(p.as_ref(), ring))
            .collect();
        let saved = Saved {
            filter_by_cgroup: settings.filter_by_cgroup,
            filter_by_pid: settings.filter_by_pid,
            filter_comm: settings.filter_comm,
            ring,
            wakeup_bytes: opts.wakeup_bytes,
            queue_bytes,
            self_tgid: settings.self_tgid,
            ancestor_helper: settings.ancestor_helper,
            http_capture_bytes: settings.http_capture_bytes,
            implementations: opts.implementations.clone(),
            syscalls: opts.syscalls.clone(),
            tracepoints: opts.tracepoints.clone(),
        };

        let tracer = Tracer {
            drain,
            probes,
            implementations,
            ring_sizes,
            failed,
            watcher,
            changes: Vec::new(),
            queue: Vec::new(),
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
        let settings = s.settings(&self.filter_cgroups, &self.filter_pids);
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
            let one = for_probe(&settings, *kind, s.ring, s.wakeup_bytes);
            match load_probe(*kind, &one, only, &s.syscalls, &s.tracepoints) {
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
        self.stop_drain();
        for (p, imp) in added {
            self.ring_sizes
                .push(ring_size_of(p.as_ref(), self.saved.ring));
            self.probes.push(p);
            self.implementations.push(imp);
            self.counts.push(Counts::default());
        }
        self.restart_drain()?;
        Ok(failed)
    }

    /// New settings for the syscalls and tracepoint probes (a node's
    /// sessions widened or narrowed what they must see), applied to the
    /// loaded ones while they run and kept for loading them later. Returns
    /// the loaded probes that cannot take the change live (the syscalls
    /// probe between stream and summary mode): they keep their old settings.
    pub fn set_hook_options(
        &mut self,
        syscalls: &SyscallOptions,
        tracepoints: &TracepointOptions,
    ) -> Result<Vec<ProbeKind>, Error> {
        let s = &self.saved;
        let settings = s.settings(&self.filter_cgroups, &self.filter_pids);
        let mut refused = Vec::new();
        for p in self.probes.iter_mut() {
            let one = for_probe(&settings, p.kind(), s.ring, s.wakeup_bytes);
            if !p.set_hook_options(&one, syscalls, tracepoints)? {
                refused.push(p.kind());
            }
        }
        self.saved.syscalls = syscalls.clone();
        self.saved.tracepoints = tracepoints.clone();
        Ok(refused)
    }

    /// Detaches and unloads these probes (nothing needs them any more); the
    /// others keep running. What their rings held is read first.
    pub fn remove_probes(&mut self, kinds: &[ProbeKind]) -> Result<(), Error> {
        if !self.probes.iter().any(|p| kinds.contains(&p.kind())) {
            return Ok(());
        }
        // Everything read so far is decoded with the old probe slots.
        self.stop_drain();
        let mut keep = Vec::new();
        let mut imps = Vec::new();
        let mut sizes = Vec::new();
        let mut counts = Vec::new();
        for (((p, imp), size), c) in std::mem::take(&mut self.probes)
            .into_iter()
            .zip(std::mem::take(&mut self.implementations))
            .zip(std::mem::take(&mut self.ring_sizes))
            .zip(std::mem::take(&mut self.counts))
        {
            if !kinds.contains(&p.kind()) {
                keep.push(p);
                imps.push(imp);
                sizes.push(size);
                counts.push(c);
            }
        }
        self.probes = keep;
        self.implementations = imps;
        self.ring_sizes = sizes;
        self.counts = counts;
        self.restart_drain()
    }

    /// Stops the drain thread after a last pass over the rings, decodes what
    /// it read, and keeps its drop counts.
    fn stop_drain(&mut self) {
        let Some(drain) = self.drain.take() else {
            return;
        };
        for (c, d) in self.counts.iter_mut().zip(drain.dropped()) {
            c.queue_full += d;
        }
        let batches = drain.stop();
        let mut q = std::mem::take(&mut self.queue);
        self.decode(batches, &mut q);
        self.queue = q;
    }

    fn restart_drain(&mut self) -> Result<(), Error> {
        self.drain = start_drain(
            &self.probes,
            self.watcher.as_ref(),
            self.clock,
            self.saved.queue_bytes,
        )?;
        Ok(())
    }

    /// Decodes the drain thread's batches, appending the events to `out`
    /// (straight into the caller's vector: an event is 400+ bytes, and every
    /// move of it shows in the per-event cost).
    fn decode(&mut self, batches: Vec<Batch>, out: &mut Vec<Event>) {
        // Room for them all at once: growing moves every event already in.
        out.reserve(batches.iter().map(Batch::len).sum());
        for b in batches {
            b.for_each(|src, rec| match src {
                Source::Probe(i) => {
                    let ev = match rec {
                        Record::Raw(data) => (self.probes[i].decoder())(data, &self.clock),
                        Record::Decoded(ev) => ev,
                    };
                    match ev {
                        Some(ev) => {
                            self.counts[i].events += 1;
                            out.push(ev);
                        }
                        None => self.counts[i].decode_errors += 1,
                    }
                }
                Source::Watcher => {
                    if let Record::Raw(data) = rec {
                        self.changes.push(crate::cgroup::decode(data, &self.clock));
                    }
                }
            });
        }
    }

    /// Each loaded probe's kernel ring size in bytes (0 for probes that
    /// aggregate in maps and have no ring), in [`Tracer::probes`] order.
    pub fn ring_sizes(&self) -> Vec<(ProbeKind, u32)> {
        self.probes
            .iter()
            .zip(&self.ring_sizes)
            .map(|(p, s)| (p.kind(), *s))
            .collect()
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

    /// The node's pods' network namespaces and addresses (the selected
    /// ones under a pod selection, else all), for the drop probe, which
    /// finds a packet's pod by them where it has no socket. The whole set
    /// each time; probes apply the difference.
    pub fn set_pod_nets(&mut self, nets: &[crate::PodNet]) -> Result<(), Error> {
        for p in &mut self.probes {
            p.set_pod_nets(nets)?;
        }
        Ok(())
    }

    /// The net probe's settings (per-packet records, the --flow filter's
    /// kernel terms); node-wide, changed live.
    pub fn set_net_options(&mut self, opts: &crate::NetOptions) -> Result<(), Error> {
        for p in &mut self.probes {
            p.set_net_options(opts)?;
        }
        Ok(())
    }

    /// cgroup v2 directories created or removed since the last call (needs
    /// [`TraceOptions::watch_cgroups`]); they arrive with the next poll.
    pub fn take_cgroup_changes(&mut self) -> Vec<CgroupChange> {
        std::mem::take(&mut self.changes)
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

    /// Waits up to `timeout` for events and appends what is pending to `out`
    /// (up to about 16,384 records a call: a consumer that is behind calls
    /// again at once, while the rest waits in the queue as raw records).
    /// Returns how many events were appended.
    ///
    /// The kernel rings are read all the time by the drain thread; this takes
    /// what it has queued, so calling it late loses nothing until the queue
    /// bound ([`TraceOptions::queue_bytes`]) is reached, and what is beyond
    /// it is counted ([`ProbeStats::queue_full`]).
    pub fn poll(&mut self, timeout: Duration, out: &mut Vec<Event>) -> Result<usize, Error> {
        let before = out.len();
        out.append(&mut self.queue);
        match &self.drain {
            Some(d) => {
                let batches = d.take(timeout)?;
                self.decode(batches, out);
            }
            None => std::thread::sleep(timeout.min(self.interval)),
        }
        sort_new(out, before);
        for p in &mut self.probes {
            p.tick(false);
        }
        if self.last_collect.elapsed() >= self.interval {
            self.collect(out)?;
        }
        Ok(out.len() - before)
    }

    /// Has every probe look at the selected processes now (the tls probe
    /// attaches to the libssl files they map): call after changing the
    /// filter, so processes already running are covered before tracing is
    /// reported as started.
    pub fn rescan(&mut self) {
        for p in &mut self.probes {
            p.tick(true);
        }
    }

    /// Drains what is still buffered (ring buffers and aggregated counts), e.g. before exit.
    pub fn flush(&mut self, out: &mut Vec<Event>) -> Result<usize, Error> {
        let before = out.len();
        out.append(&mut self.queue);
        if let Some(d) = &self.drain {
            let batches = d.flush()?;
            self.decode(batches, out);
        }
        sort_new(out, before);
        self.collect(out)?;
        Ok(out.len() - before)
    }

    /// What an aggregating probe would report now, without handing it out
    /// or counting it (a session's starting point on a shared probe).
    pub fn peek_totals(&mut self, kind: ProbeKind) -> Result<Vec<Event>, Error> {
        let mut out = Vec::new();
        for p in self.probes.iter_mut().filter(|p| p.kind() == kind) {
            p.collect(&self.clock, &mut out)?;
        }
        Ok(out)
    }

    fn collect(&mut self, out: &mut Vec<Event>) -> Result<(), Error> {
        self.last_collect = Instant::now();
        for (i, probe) in self.probes.iter_mut().enumerate() {
            let before = out.len();
            probe.collect(&self.clock, out)?;
            self.counts[i].events += (out.len() - before) as u64;
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
        let dropped = self.drain.as_ref().map(Drain::dropped).unwrap_or_default();
        self.probes
            .iter()
            .zip(self.counts.iter())
            .enumerate()
            .map(|(i, (p, c))| ProbeStats {
                probe: p.kind(),
                events: c.events,
                lost: read_stat(p.stats_map(), 0),
                map_full: read_stat(p.stats_map(), 1),
                decode_errors: c.decode_errors,
                queue_full: c.queue_full + dropped.get(i).copied().unwrap_or(0),
            })
            .collect()
    }
}

/// Each probe has its own ring: merges what this call appended into time
/// order (a stable sort that is linear on already ordered input, the
/// common case of one busy probe).
fn sort_new(out: &mut [Event], from: usize) {
    out[from..].sort_by_key(|e| e.timestamp);
}

/// The ring size a loaded probe was given (0: it has no ring).
fn ring_size_of(p: &dyn LoadedProbe, ring: RingSize) -> u32 {
    if p.ring().is_some() {
        ring_bytes(p.kind(), ring)
    } else {
        0
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
    syscalls: &SyscallOptions,
    tracepoints: &TracepointOptions,
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
            // The pipeline asks for `http` when `grpc` is wanted
            // (ProbeKind::kernel_probe); loading it under either name works.
            ProbeKind::Http | ProbeKind::Grpc => crate::http::load(settings),
            ProbeKind::Dns => crate::dns::load(settings),
            ProbeKind::Drop => crate::drop::load(settings),
            ProbeKind::Net => crate::net::load(settings),
            ProbeKind::Tls => crate::tls::load(settings),
            ProbeKind::Syscalls => crate::syscalls::load(settings, syscalls),
            ProbeKind::Tracepoint => crate::tracepoint::load(settings, tracepoints),
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
