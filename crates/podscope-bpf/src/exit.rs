//! exit probe: process exits with exit code or signal and lifetime.

mod skel {
    #![allow(missing_debug_implementations, missing_docs, clippy::all)]
    include!(concat!(env!("OUT_DIR"), "/exit.skel.rs"));
}

use podscope_model::{Event, EventData, ExitEvent, ProbeKind};
use skel::{types, ExitProbeSkel, ExitProbeSkelBuilder};

use crate::decode::{header, read_record, Clock};
use crate::load::{common_accessors, load_skeleton, DecodeFn, LoadSettings, LoadedProbe};

// SAFETY: generated from the C struct: plain integers and arrays, no pointers.
unsafe impl plain::Plain for types::exit_event {}

pub(crate) struct Probe {
    skel: ExitProbeSkel<'static>,
}

pub(crate) fn load(settings: &LoadSettings) -> Result<Box<dyn LoadedProbe>, crate::Error> {
    let skel = load_skeleton!(ExitProbeSkelBuilder, ProbeKind::Exit.name(), settings);
    Ok(Box::new(Probe { skel }))
}

impl LoadedProbe for Probe {
    fn kind(&self) -> ProbeKind {
        ProbeKind::Exit
    }
    fn ring(&self) -> Option<&dyn libbpf_rs::MapCore> {
        Some(&self.skel.maps.events)
    }
    fn decoder(&self) -> DecodeFn {
        decode
    }
    common_accessors!();
}

fn decode(data: &[u8], clock: &Clock) -> Option<Event> {
    let raw: types::exit_event = read_record(data);
    let status = raw.exit_code;
    let signal = (status & 0x7f) as i32;
    let h = header!(raw.hdr);
    let data = EventData::Exit(ExitEvent {
        kind: "exit".into(),
        ppid: h.ppid,
        exit_code: (signal == 0).then_some(((status >> 8) & 0xff) as i32),
        signal: (signal != 0).then_some(signal),
        core_dumped: status & 0x80 != 0,
        lifetime_ns: raw.lifetime_ns,
    });
    Some(h.into_event(clock, data))
}
