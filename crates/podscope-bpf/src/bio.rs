//! bio probe: block I/O requests with latency, attributed to the submitter.

use podscope_model::{BioEvent, Event, EventData, ProbeKind};

use crate::decode::{c_str, header, read_record, Clock};

crate::load::ring_probe!(
    "bio",
    BioProbeSkel,
    BioProbeSkelBuilder,
    bio_event,
    ProbeKind::Bio
);

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
