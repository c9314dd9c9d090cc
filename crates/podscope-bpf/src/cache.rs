//! cache probe: page-cache hits, misses and dirtied pages per process, summed
//! in the kernel and drained by user space once per interval.

mod skel {
    #![allow(missing_debug_implementations, missing_docs, clippy::all)]
    include!(concat!(env!("OUT_DIR"), "/cache.skel.rs"));
}

use libbpf_rs::MapCore;
use podscope_model::{CacheEvent, Event, EventData, Identity, ProbeKind};
use skel::{types, CacheProbeSkel, CacheProbeSkelBuilder};

use crate::decode::{c_str, read_record, Clock};
use crate::load::{common_accessors, load_skeleton, DecodeFn, LoadSettings, LoadedProbe};

// SAFETY: generated from the C structs: plain integers and arrays, no pointers.
unsafe impl plain::Plain for types::cache_key {}
// SAFETY: as above.
unsafe impl plain::Plain for types::cache_counts {}

pub(crate) struct Probe {
    skel: crate::load::Owned<CacheProbeSkel<'static>>,
    last_collect_ns: u64,
    method: &'static str,
    /// Linux < 5.14 cannot look up and delete a hash entry atomically: there
    /// the counters stay in the map and each interval reports the growth
    /// since the last read (exact), dropping entries that did not grow.
    previous: Option<std::collections::HashMap<Vec<u8>, types::cache_counts>>,
}

/// How page lookups are counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Method {
    /// fentry on folio_mark_accessed / filemap_add_folio.
    Exact,
    /// filemap tracepoints (no fentry needed).
    Tracepoints,
}

fn load_with(
    settings: &LoadSettings,
    method: Method,
) -> Result<crate::load::Owned<CacheProbeSkel<'static>>, crate::Error> {
    let exact = method == Method::Exact;
    // Functions and tracepoints renamed with folios (5.16-5.18): the first
    // name this kernel has.
    let accessed = first_function(&["folio_mark_accessed", "mark_page_accessed"]);
    let added = first_function(&["filemap_add_folio", "add_to_page_cache_lru"]);
    let dirty_folio = crate::sys::resolve_hook(&podscope_model::Hook::Tracepoint(
        "writeback/writeback_dirty_folio",
    ))
    .is_some();
    Ok(load_skeleton!(
        CacheProbeSkelBuilder,
        ProbeKind::Cache.name(),
        settings,
        |open: &mut skel::OpenCacheProbeSkel| {
            if let Some(ro) = open.maps.rodata_data.as_deref_mut() {
                ro.page_shift = page_shift();
            }
            let p = &mut open.progs;
            p.cache_exact_accessed.set_autoload(exact);
            p.cache_exact_add.set_autoload(exact);
            if exact {
                // Only fails for names with NUL bytes; ours have none.
                let _ = p
                    .cache_exact_accessed
                    .set_attach_target(0, Some(accessed.into()));
                let _ = p.cache_exact_add.set_attach_target(0, Some(added.into()));
            }
            p.cache_dirty.set_autoload(dirty_folio);
            p.cache_dirty_page.set_autoload(!dirty_folio);
            p.cache_get_pages.set_autoload(!exact);
            p.cache_map_pages.set_autoload(!exact);
            p.cache_fault.set_autoload(!exact);
            p.cache_add.set_autoload(!exact);
        }
    ))
}

fn page_shift() -> u32 {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if size > 0 {
        (size as u64).trailing_zeros()
    } else {
        12
    }
}

fn first_function(names: &[&'static str]) -> &'static str {
    let btf = crate::sys::kernel_btf();
    names
        .iter()
        .copied()
        .find(|n| btf.has_function(n))
        .unwrap_or(names[0])
}

/// Loads the `fentry` (exact) or `tracepoints` implementation; the tracer
/// falls back from the first to the second when the kernel refuses fentry.
pub(crate) fn load(
    settings: &LoadSettings,
    imp: &podscope_model::Implementation,
) -> Result<Box<dyn LoadedProbe>, crate::Error> {
    // Counts live in a hash map; the ring buffer is unused, so keep it minimal.
    let settings = LoadSettings {
        ring_bytes: 4096,
        ..*settings
    };
    let (method, name) = if imp.name == "fentry" {
        (Method::Exact, "fentry")
    } else {
        (Method::Tracepoints, "tracepoints")
    };
    let skel = load_with(&settings, method)?;
    let method = name;
    Ok(Box::new(Probe {
        skel,
        last_collect_ns: Clock::now_mono(),
        method,
        previous: None,
    }))
}

impl LoadedProbe for Probe {
    fn kind(&self) -> ProbeKind {
        ProbeKind::Cache
    }
    fn ring(&self) -> Option<&libbpf_rs::MapMut<'static>> {
        None
    }
    fn decoder(&self) -> DecodeFn {
        |_, _| None
    }
    common_accessors!();

    fn collect(&mut self, clock: &Clock, out: &mut Vec<Event>) -> Result<(), crate::Error> {
        let now = Clock::now_mono();
        let interval_ns = now.saturating_sub(self.last_collect_ns);
        self.last_collect_ns = now;
        let map = &self.skel.maps.counts;
        let keys: Vec<Vec<u8>> = map.keys().collect();
        for key in keys {
            if let Some(previous) = &mut self.previous {
                let Some(value) = map
                    .lookup(&key, libbpf_rs::MapFlags::ANY)
                    .map_err(crate::Error::runtime("reading page-cache counts"))?
                else {
                    continue;
                };
                let v: types::cache_counts = read_record(&value);
                let mut delta = v;
                if let Some(p) = previous.get(&key) {
                    delta.accesses -= p.accesses.min(delta.accesses);
                    delta.added -= p.added.min(delta.added);
                    delta.dirtied -= p.dirtied.min(delta.dirtied);
                }
                if delta.accesses == 0 && delta.added == 0 && delta.dirtied == 0 {
                    // Idle for a whole interval: forget it (its process has
                    // most likely exited).
                    let _ = map.delete(&key);
                    previous.remove(&key);
                    continue;
                }
                previous.insert(key.clone(), v);
                let k: types::cache_key = read_record(&key);
                out.push(to_event(
                    clock.wall(now),
                    k,
                    delta,
                    interval_ns,
                    self.method,
                ));
                continue;
            }
            // Take and reset atomically so no increment is counted twice or lost.
            let value = match map.lookup_and_delete(&key) {
                Ok(Some(v)) => v,
                Ok(None) => continue,
                // EINVAL / ENOTSUPP (524): this kernel has no atomic
                // lookup-and-delete for hash maps; read deltas instead.
                Err(_) => {
                    self.previous = Some(Default::default());
                    return self.collect(clock, out);
                }
            };
            let k: types::cache_key = read_record(&key);
            let v: types::cache_counts = read_record(&value);
            out.push(to_event(clock.wall(now), k, v, interval_ns, self.method));
        }
        Ok(())
    }
}

/// Lookups minus insertions that were not writes; see docs/probes.md#cache.
pub(crate) fn derive(accesses: u64, added: u64, dirtied: u64) -> (u64, u64, Option<f64>) {
    let misses = added.saturating_sub(dirtied);
    let hits = accesses.saturating_sub(misses);
    let ratio = (hits + misses > 0).then(|| hits as f64 / (hits + misses) as f64);
    (hits, misses, ratio)
}

fn to_event(
    timestamp: podscope_model::Timestamp,
    k: types::cache_key,
    v: types::cache_counts,
    interval_ns: u64,
    method: &'static str,
) -> Event {
    let (hits, misses, hit_ratio) = derive(v.accesses, v.added, v.dirtied);
    Event {
        timestamp,
        identity: Identity::default(),
        pid: k.pid,
        tid: k.pid,
        uid: v.uid,
        comm: c_str(&v.comm),
        cgroup_id: k.cgroup_id,
        data: EventData::Cache(CacheEvent {
            kind: "interval".into(),
            ppid: v.ppid,
            hits,
            misses,
            dirtied: v.dirtied,
            added: v.added,
            hit_ratio,
            interval_ns,
            method: method.into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::derive;

    #[test]
    fn all_hits_when_nothing_added() {
        assert_eq!(derive(100, 0, 0), (100, 0, Some(1.0)));
    }

    #[test]
    fn reads_that_miss_count_as_misses() {
        let (hits, misses, ratio) = derive(100, 25, 0);
        assert_eq!((hits, misses), (75, 25));
        assert_eq!(ratio, Some(0.75));
    }

    #[test]
    fn pure_writes_are_not_misses() {
        assert_eq!(derive(0, 10, 10), (0, 0, None));
    }
}
