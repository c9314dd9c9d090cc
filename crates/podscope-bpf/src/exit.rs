//! exit probe: process exits with exit code or signal and lifetime.

use podscope_model::{Event, EventData, ExitEvent, ProbeKind};

use crate::decode::{header, read_record, Clock};

crate::load::ring_probe!(
    "exit",
    ExitProbeSkel,
    ExitProbeSkelBuilder,
    exit_event,
    ProbeKind::Exit
);

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
