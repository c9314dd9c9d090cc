//! exec probe: process execs with argv and result.

use podscope_model::{errno_name, Event, EventData, ExecEvent, ProbeKind};

use crate::decode::{c_str, header, read_record, Clock};

crate::load::ring_probe!(
    "exec",
    ExecProbeSkel,
    ExecProbeSkelBuilder,
    exec_event,
    ProbeKind::Exec
);

/// A typical record: the probe sends only the used part of argv; sized for
/// 512 bytes of arguments.
pub(crate) fn typical_record_bytes() -> usize {
    let args = std::mem::size_of_val(&types::exec_event::default().args);
    RECORD_BYTES - args + 512.min(args)
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
