//! What every probe module shares: the loaded-probe trait, loss counters,
//! libbpf log capture, and the open -> configure -> load -> attach sequence.

use std::os::fd::BorrowedFd;
use std::sync::Mutex;

use libbpf_rs::{MapCore, MapFlags, PrintLevel};
use podscope_model::{Event, ProbeKind};

use crate::decode::Clock;

/// Settings every probe receives before load.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LoadSettings<'a> {
    pub filter_by_cgroup: bool,
    pub filter_by_pid: bool,
    pub filter_comm: Option<[i8; 16]>,
    pub ring_bytes: u32,
    pub wakeup_bytes: u64,
    /// Our own pid, to leave out; 0 to trace ourselves too.
    pub self_tgid: u32,
    /// bpf_get_current_ancestor_cgroup_id() is allowed in tracing programs
    /// (not on Linux 5.10): else the cgroup filter walks the task's cgroup.
    pub ancestor_helper: bool,
    /// http probe: bytes of each socket message copied to user space.
    pub http_capture_bytes: u32,
    /// The filter maps of the first probe loaded, shared by the others.
    pub shared_filters: Option<(BorrowedFd<'a>, BorrowedFd<'a>)>,
}

/// Decodes one ring-buffer record of a probe.
pub(crate) type DecodeFn = fn(&[u8], &Clock) -> Option<Event>;

/// A probe that is loaded and attached.
pub(crate) trait LoadedProbe {
    fn kind(&self) -> ProbeKind;
    /// The ring buffer map, or None for probes that aggregate in maps.
    fn ring(&self) -> Option<&libbpf_rs::MapMut<'static>>;
    fn decoder(&self) -> DecodeFn;
    fn stats_map(&self) -> &dyn MapCore;
    fn filter_cgroups(&self) -> &libbpf_rs::MapMut<'static>;
    fn filter_pids(&self) -> &libbpf_rs::MapMut<'static>;
    /// The probe's own kernel counters beyond the shared ones, by name.
    fn counters(&self) -> Vec<(&'static str, u64)> {
        Vec::new()
    }
    /// Called on every poll (`full`: also when the filter changed, so the
    /// probe looks at every selected process now): probes that attach to
    /// user-space libraries (tls) follow new processes here.
    fn tick(&mut self, _full: bool) {}
    /// The pods' network namespaces and addresses, for probes that find a
    /// packet's pod by them (drop).
    fn set_pod_nets(&mut self, _nets: &[crate::PodNet]) -> Result<(), crate::Error> {
        Ok(())
    }
    /// The net probe's per-packet switch and --flow filter (changed live).
    fn set_net_options(&mut self, _opts: &crate::NetOptions) -> Result<(), crate::Error> {
        Ok(())
    }
    /// New settings for the probes that have them (syscalls, tracepoint),
    /// applied while the probe runs. Ok(false): this change needs the probe
    /// loaded again (the caller decides what to do); probes without such
    /// settings accept anything.
    fn set_hook_options(
        &mut self,
        _settings: &LoadSettings,
        _syscalls: &crate::SyscallOptions,
        _tracepoints: &crate::TracepointOptions,
    ) -> Result<bool, crate::Error> {
        Ok(true)
    }
    /// Periodic work: probes that aggregate in the kernel emit their totals here.
    fn collect(&mut self, _clock: &Clock, _out: &mut Vec<Event>) -> Result<(), crate::Error> {
        Ok(())
    }
}

/// Sums one per-CPU u64 counter of `probe_stats`.
pub(crate) fn read_stat(map: &dyn MapCore, index: u32) -> u64 {
    match map.lookup_percpu(&index.to_ne_bytes(), MapFlags::ANY) {
        Ok(Some(per_cpu)) => per_cpu
            .iter()
            .filter_map(|v| {
                v.get(..8)
                    .map(|b| u64::from_ne_bytes(b.try_into().unwrap()))
            })
            .sum(),
        _ => 0,
    }
}

static LIBBPF_LOG: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn capture(level: PrintLevel, msg: String) {
    if matches!(level, PrintLevel::Debug) {
        return;
    }
    if let Ok(mut log) = LIBBPF_LOG.lock() {
        // Bounded: a verifier log can be megabytes.
        if log.len() > 2000 {
            log.drain(..1000);
        }
        log.extend(msg.lines().map(|l| l.to_string()));
    }
}

/// Routes libbpf's messages into a buffer that load errors carry, instead of
/// stderr (where hints like "try raising ulimit -l" mislead on memcg kernels).
pub(crate) fn start_log_capture() {
    libbpf_rs::set_print(Some((PrintLevel::Info, capture)));
    take_log();
}

pub(crate) fn take_log() -> Vec<String> {
    LIBBPF_LOG
        .lock()
        .map(|mut l| std::mem::take(&mut *l))
        .unwrap_or_default()
}

/// The ring size to create a probe's ring with. `PODSCOPE_TEST_BREAK_PROBE=name`
/// (tests only) asks for an empty ring, which the kernel refuses, so that probe fails to
/// load for real while the others load: start-up robustness is tested with a
/// genuine load failure, not a simulated one.
pub(crate) fn ring_bytes_for(probe: &str, ring_bytes: u32) -> u32 {
    match std::env::var("PODSCOPE_TEST_BREAK_PROBE") {
        Ok(names) if names.split(',').any(|n| n == probe) => 0,
        _ => ring_bytes,
    }
}

/// The heap slot a skeleton's object lives in. Skeletons borrow it, so it
/// must outlive them; before, it was `Box::leak`ed on every load, which grew
/// a long-lived agent that loads and unloads probes.
pub(crate) struct Storage(*mut std::mem::MaybeUninit<libbpf_rs::OpenObject>);

impl Storage {
    pub(crate) fn new() -> Storage {
        Storage(Box::into_raw(Box::new(std::mem::MaybeUninit::uninit())))
    }

    /// # Safety
    /// Whatever borrows the slot must be gone before this `Storage` drops
    /// (declare the borrower after it, or keep both in an [`Owned`]).
    pub(crate) unsafe fn slot(&self) -> &'static mut std::mem::MaybeUninit<libbpf_rs::OpenObject> {
        // SAFETY: the pointer came from Box::into_raw and is freed only in
        // Drop; the caller keeps the borrow shorter than `self`.
        unsafe { &mut *self.0 }
    }
}

impl Drop for Storage {
    fn drop(&mut self) {
        // SAFETY: from Box::into_raw in new(), freed once. The skeleton that
        // used the slot has already closed the object in it (MaybeUninit
        // never drops its contents).
        drop(unsafe { Box::from_raw(self.0) });
    }
}

/// A loaded skeleton and the storage it borrows, dropped in that order.
pub(crate) struct Owned<S> {
    skel: std::mem::ManuallyDrop<S>,
    _storage: Storage,
}

impl<S> Owned<S> {
    /// # Safety
    /// `skel` must borrow from nothing but `storage`'s slot.
    pub(crate) unsafe fn new(skel: S, storage: Storage) -> Owned<S> {
        Owned {
            skel: std::mem::ManuallyDrop::new(skel),
            _storage: storage,
        }
    }
}

impl<S> Drop for Owned<S> {
    fn drop(&mut self) {
        // SAFETY: dropped once, here, before `_storage` (a field, so it drops
        // after this body).
        unsafe { std::mem::ManuallyDrop::drop(&mut self.skel) }
    }
}

impl<S> std::ops::Deref for Owned<S> {
    type Target = S;
    fn deref(&self) -> &S {
        &self.skel
    }
}

impl<S> std::ops::DerefMut for Owned<S> {
    fn deref_mut(&mut self) -> &mut S {
        &mut self.skel
    }
}

/// Opens, configures, loads and attaches one skeleton; evaluates to an
/// [`Owned`] skeleton with a `'static` lifetime that frees its storage when
/// it drops (the object itself is closed by the skeleton).
macro_rules! load_skeleton {
    ($builder:ty, $name:expr, $settings:expr) => {
        $crate::load::load_skeleton!($builder, $name, $settings, |_open| {})
    };
    ($builder:ty, $name:expr, $settings:expr, $extra:expr) => {{
        use libbpf_rs::skel::{OpenSkel as _, Skel as _, SkelBuilder as _};
        let settings: &$crate::load::LoadSettings = $settings;
        let kind: &'static str = $name;
        let fail = |stage: &'static str| {
            move |source: libbpf_rs::Error| $crate::Error::Load {
                probe: kind,
                stage,
                source,
                log: $crate::load::take_log(),
            }
        };
        $crate::load::take_log();
        let storage = $crate::load::Storage::new();
        // SAFETY: `open` and the skeleton below are declared after `storage`
        // (dropped before it on every error path) or moved into an `Owned`
        // with it.
        let mut open = <$builder>::default()
            .open(unsafe { storage.slot() })
            .map_err(fail("opened"))?;
        if let Some(ro) = open.maps.rodata_data.as_deref_mut() {
            ro.filter_by_cgroup = settings.filter_by_cgroup;
            ro.filter_by_pid = settings.filter_by_pid;
            ro.filter_by_comm = settings.filter_comm.is_some();
            ro.filter_comm = settings.filter_comm.unwrap_or([0; 16]);
            ro.wakeup_bytes = settings.wakeup_bytes;
            ro.self_tgid = settings.self_tgid;
            ro.ancestor_helper = settings.ancestor_helper;
        }
        if let Some((cgroups, pids)) = settings.shared_filters {
            open.maps
                .filter_cgroups
                .reuse_fd(cgroups)
                .map_err(fail("opened"))?;
            open.maps
                .filter_pids
                .reuse_fd(pids)
                .map_err(fail("opened"))?;
        }
        open.maps
            .events
            .set_max_entries($crate::load::ring_bytes_for(kind, settings.ring_bytes))
            .map_err(fail("opened"))?;
        ($extra)(&mut open);
        let mut skel = open.load().map_err(fail("loaded"))?;
        skel.attach().map_err(fail("attached"))?;
        // SAFETY: the skeleton borrows only the storage's slot.
        unsafe { $crate::load::Owned::new(skel, storage) }
    }};
}
pub(crate) use load_skeleton;

/// The accessors every probe implements identically from its skeleton.
macro_rules! common_accessors {
    () => {
        fn stats_map(&self) -> &dyn libbpf_rs::MapCore {
            &self.skel.maps.probe_stats
        }
        fn filter_cgroups(&self) -> &libbpf_rs::MapMut<'static> {
            &self.skel.maps.filter_cgroups
        }
        fn filter_pids(&self) -> &libbpf_rs::MapMut<'static> {
            &self.skel.maps.filter_pids
        }
    };
}
pub(crate) use common_accessors;

/// Everything a probe that streams one event struct through its ring buffer
/// needs besides its decoder: the skeleton module, the `Plain` marker for the
/// event type, the loaded-probe type and its `load` function.
macro_rules! ring_probe {
    ($file:literal, $skel:ident, $builder:ident, $event:ident, $kind:expr) => {
        $crate::load::ring_probe!($file, $skel, $builder, $event, $kind, counters: |_p: &Probe| Vec::new());
    };
    // `counters`: the probe's own kernel counters (name, value) from its maps.
    ($file:literal, $skel:ident, $builder:ident, $event:ident, $kind:expr, counters: $counters:expr) => {
        mod skel {
            #![allow(missing_debug_implementations, missing_docs, clippy::all)]
            include!(concat!(env!("OUT_DIR"), "/", $file, ".skel.rs"));
        }

        use skel::types;

        // SAFETY: generated from the C struct: plain integers and arrays, no pointers.
        unsafe impl plain::Plain for types::$event {}

        /// The largest record this probe writes to its ring, in bytes.
        #[allow(dead_code)]
        pub(crate) const RECORD_BYTES: usize = std::mem::size_of::<types::$event>();

        pub(crate) struct Probe {
            skel: $crate::load::Owned<skel::$skel<'static>>,
        }

        pub(crate) fn load(
            settings: &$crate::load::LoadSettings,
        ) -> Result<Box<dyn $crate::load::LoadedProbe>, $crate::Error> {
            let skel = $crate::load::load_skeleton!(skel::$builder, $kind.name(), settings);
            Ok(Box::new(Probe { skel }))
        }

        impl $crate::load::LoadedProbe for Probe {
            fn kind(&self) -> podscope_model::ProbeKind {
                $kind
            }
            fn ring(&self) -> Option<&libbpf_rs::MapMut<'static>> {
                Some(&self.skel.maps.events)
            }
            fn decoder(&self) -> $crate::load::DecodeFn {
                decode
            }
            fn counters(&self) -> Vec<(&'static str, u64)> {
                let f: fn(&Probe) -> Vec<(&'static str, u64)> = $counters;
                f(self)
            }
            $crate::load::common_accessors!();
        }
    };
}
pub(crate) use ring_probe;
