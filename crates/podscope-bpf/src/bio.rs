//! bio probe: block I/O requests with latency, attributed to the submitter.

use podscope_model::{BioEvent, Event, EventData, Implementation, ProbeKind};

use crate::decode::{c_str, header, read_record, Clock};
use crate::load::{common_accessors, load_skeleton, DecodeFn, LoadSettings, LoadedProbe};

mod skel {
    #![allow(missing_debug_implementations, missing_docs, clippy::all)]
    include!(concat!(env!("OUT_DIR"), "/bio.skel.rs"));
}

use skel::types;

// SAFETY: generated from the C struct: plain integers and arrays, no pointers.
unsafe impl plain::Plain for types::bio_event {}

/// The record this probe writes to its ring, in bytes.
pub(crate) const RECORD_BYTES: usize = std::mem::size_of::<types::bio_event>();

pub(crate) struct Probe {
    skel: crate::load::Owned<skel::BioProbeSkel<'static>>,
}

/// Loads the programs of `imp` (see bpf/bio.bpf.c): `block_io_start` or
/// `block_getrq`, each tracepoint in the argument layout this kernel has.
pub(crate) fn load(
    settings: &LoadSettings,
    imp: &Implementation,
) -> Result<Box<dyn LoadedProbe>, crate::Error> {
    let btf = crate::sys::kernel_btf();
    let getrq = imp.name == "block_getrq";
    let (getrq_q, issue_q, merge_q) = (
        btf.queue_first("block_getrq"),
        btf.queue_first("block_rq_issue"),
        btf.queue_first("block_rq_merge"),
    );
    let skel = load_skeleton!(
        skel::BioProbeSkelBuilder,
        ProbeKind::Bio.name(),
        settings,
        |open: &mut skel::OpenBioProbeSkel| {
            let p = &mut open.progs;
            p.bio_start.set_autoload(!getrq);
            p.bio_getrq.set_autoload(getrq && !getrq_q);
            p.bio_getrq_q.set_autoload(getrq && getrq_q);
            p.bio_issue.set_autoload(!issue_q);
            p.bio_issue_q.set_autoload(issue_q);
            p.bio_merge.set_autoload(!merge_q);
            p.bio_merge_q.set_autoload(merge_q);
        }
    );
    Ok(Box::new(Probe { skel }))
}

impl LoadedProbe for Probe {
    fn kind(&self) -> ProbeKind {
        ProbeKind::Bio
    }
    fn ring(&self) -> Option<&libbpf_rs::MapMut<'static>> {
        Some(&self.skel.maps.events)
    }
    fn decoder(&self) -> DecodeFn {
        decode
    }
    common_accessors!();
}

/// REQ_SYNC in `cmd_flags` (bit 11 on 6.x kernels: __REQ_SYNC after the 8 op bits
/// and FAILFAST_DEV/TRANSPORT/DRIVER).
const REQ_SYNC: u32 = 1 << 11;

fn op_name(op: u32) -> String {
    match op {
        0 => "read".into(),
        1 => "write".into(),
        2 => "flush".into(),
        3 => "discard".into(),
        5 => "secure_erase".into(),
        7 => "zone_append".into(),
        9 => "write_zeroes".into(),
        other => format!("op{other}"),
    }
}

fn decode(data: &[u8], clock: &Clock) -> Option<Event> {
    let raw: types::bio_event = read_record(data);
    let h = header!(raw.hdr);
    let data = EventData::Bio(BioEvent {
        kind: "io".into(),
        disk: c_str(&raw.disk),
        dev: format!("{}:{}", raw.dev_major, raw.dev_minor),
        op: op_name(raw.op),
        sector: raw.sector,
        bytes: raw.bytes,
        latency_ns: raw.latency_ns,
        queued_ns: raw.queued_ns,
        sync: raw.cmd_flags & REQ_SYNC != 0,
        error: (raw.error != 0).then_some(raw.error),
    });
    Some(h.into_event(clock, data))
}
