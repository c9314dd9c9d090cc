//! exec probe: process execs with argv and result.

mod skel {
    #![allow(missing_debug_implementations, missing_docs, clippy::all)]
    include!(concat!(env!("OUT_DIR"), "/exec.skel.rs"));
}

use podscope_model::{errno_name, Event, EventData, ExecEvent, ProbeKind};
use skel::{types, ExecProbeSkel, ExecProbeSkelBuilder};

use crate::decode::{c_str, header, read_record, Clock};
use crate::load::{common_accessors, load_skeleton, DecodeFn, LoadSettings, LoadedProbe};

// SAFETY: generated from the C struct: plain integers and arrays, no pointers.
unsafe impl plain::Plain for types::exec_event {}

pub(crate) struct Probe {
    skel: ExecProbeSkel<'static>,
}

pub(crate) fn load(settings: &LoadSettings) -> Result<Box<dyn LoadedProbe>, crate::Error> {
    let skel = load_skeleton!(ExecProbeSkelBuilder, ProbeKind::Exec.name(), settings);
    Ok(Box::new(Probe { skel }))
}

impl LoadedProbe for Probe {
    fn kind(&self) -> ProbeKind {
        ProbeKind::Exec
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
    let raw: types::exec_event = read_record(data);
    let used = (raw.args_size as usize).min(raw.args.len());
    let bytes: Vec<u8> = raw.args[..used].iter().map(|c| *c as u8).collect();
    let mut args: Vec<String> = if bytes.is_empty() {
        Vec::new()
    } else {
        bytes
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect()
    };
    // argv ends with a NUL, which leaves one empty piece behind.
    if bytes.last() == Some(&0) {
        args.pop();
    }
    let h = header!(raw.hdr);
    let data = EventData::Exec(ExecEvent {
        kind: "exec".into(),
        ppid: h.ppid,
        filename: c_str(&raw.filename),
        args,
        args_truncated: raw.args_truncated != 0,
        retval: raw.retval,
        error: (raw.retval < 0).then(|| errno_name(-raw.retval)),
    });
    Some(h.into_event(clock, data))
}
