//! cgroup watcher: cgroup v2 directories created and removed, and in-kernel
//! admission of new pod cgroups while tracing by pod selection.

mod skel {
    #![allow(missing_debug_implementations, missing_docs, clippy::all)]
    include!(concat!(env!("OUT_DIR"), "/cgroup.skel.rs"));
}

use libbpf_rs::{MapCore, MapFlags};
use podscope_model::Timestamp;
use skel::{types, CgroupProbeSkel, CgroupProbeSkelBuilder};

use crate::decode::{c_str, read_record, Clock};
use crate::load::{load_skeleton, read_stat, LoadSettings};

// SAFETY: generated from the C struct: plain integers and arrays, no pointers.
unsafe impl plain::Plain for types::cgroup_event {}

/// Filter map value of a cgroup the kernel admitted on its own, pending a decision.
pub const FILTER_PENDING: u8 = 2;

/// A cgroup v2 directory appeared or went away.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupChange {
    /// When (kernel clock mapped to wall time).
    pub timestamp: Timestamp,
    /// Created (true) or removed (false).
    pub created: bool,
    /// Its cgroup v2 id.
    pub id: u64,
    /// The parent's cgroup v2 id.
    pub parent_id: u64,
    /// Depth below the root (the root is 0).
    pub level: u32,
    /// Path relative to the cgroup v2 root, e.g. `/kubepods/besteffort/pod<uid>`.
    pub path: String,
    /// The kernel admitted it into the filter as pending (a new pod cgroup).
    pub admitted: bool,
}

pub(crate) struct Watcher {
    skel: crate::load::Owned<CgroupProbeSkel<'static>>,
}

impl std::fmt::Debug for Watcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Watcher")
    }
}

impl Watcher {
    pub(crate) fn load(
        settings: &LoadSettings,
        admit_new_pods: bool,
    ) -> Result<Watcher, crate::Error> {
        let settings = LoadSettings {
            ring_bytes: 64 * 1024,
            ..*settings
        };
        let skel = load_skeleton!(
            CgroupProbeSkelBuilder,
            "cgroup-watcher",
            &settings,
            |open: &mut skel::OpenCgroupProbeSkel| {
                if let Some(ro) = open.maps.rodata_data.as_deref_mut() {
                    ro.admit_new_pods = admit_new_pods;
                }
            }
        );
        Ok(Watcher { skel })
    }

    pub(crate) fn ring(&self) -> &libbpf_rs::MapMut<'static> {
        &self.skel.maps.events
    }

    pub(crate) fn lost(&self) -> u64 {
        read_stat(&self.skel.maps.probe_stats, 0) + read_stat(&self.skel.maps.probe_stats, 1)
    }

    /// Marks a cgroup as one whose new children are kubelet QoS or pod cgroups.
    pub(crate) fn watch_parent(&self, id: u64) -> Result<(), crate::Error> {
        self.skel
            .maps
            .watch_parents
            .update(&id.to_ne_bytes(), &[1], MapFlags::ANY)
            .map_err(crate::Error::runtime(format!("watching cgroup {id}")))
    }
}

pub(crate) fn decode(data: &[u8], clock: &Clock) -> CgroupChange {
    let raw: types::cgroup_event = read_record(data);
    CgroupChange {
        timestamp: clock.wall(raw.ts_ns),
        created: raw.kind == 1,
        id: raw.id,
        parent_id: raw.parent_id,
        level: raw.level,
        path: c_str(&raw.path),
        admitted: raw.admitted != 0,
    }
}
