//! open probe: file opens with path, flags and result.

use podscope_model::{errno_name, Event, EventData, OpenEvent, ProbeKind};

use crate::decode::{c_str, header, read_record, Clock};

crate::load::ring_probe!(
    "open",
    OpenProbeSkel,
    OpenProbeSkelBuilder,
    open_event,
    ProbeKind::Open
);

fn decode(data: &[u8], clock: &Clock) -> Option<Event> {
    let raw: types::open_event = read_record(data);
    let h = header!(raw.hdr);
    let ok = raw.ret >= 0;
    let data = EventData::Open(OpenEvent {
        kind: "open".into(),
        path: c_str(&raw.path),
        dirfd: (raw.dirfd != libc::AT_FDCWD).then_some(raw.dirfd),
        flags: raw.flags,
        flags_str: open_flags(raw.flags),
        mode: raw.mode,
        fd: ok.then_some(raw.ret),
        errno: (!ok).then_some(-raw.ret),
        error: (!ok).then(|| errno_name(-raw.ret)),
    });
    Some(h.into_event(clock, data))
}

/// `O_RDONLY|O_CLOEXEC` style text for x86-64/generic open flags.
pub(crate) fn open_flags(flags: i32) -> String {
    // One String, no allocation per flag: this runs for every open event.
    let mut out = String::with_capacity(32);
    out.push_str(match flags & 3 {
        0 => "O_RDONLY",
        1 => "O_WRONLY",
        2 => "O_RDWR",
        _ => "O_ACCMODE",
    });
    const NAMED: &[(i32, &str)] = &[
        (libc::O_CREAT, "O_CREAT"),
        (libc::O_EXCL, "O_EXCL"),
        (libc::O_NOCTTY, "O_NOCTTY"),
        (libc::O_TRUNC, "O_TRUNC"),
        (libc::O_APPEND, "O_APPEND"),
        (libc::O_NONBLOCK, "O_NONBLOCK"),
        (libc::O_DSYNC, "O_DSYNC"),
        (libc::O_DIRECT, "O_DIRECT"),
        (libc::O_LARGEFILE, "O_LARGEFILE"),
        (libc::O_DIRECTORY, "O_DIRECTORY"),
        (libc::O_NOFOLLOW, "O_NOFOLLOW"),
        (libc::O_NOATIME, "O_NOATIME"),
        (libc::O_CLOEXEC, "O_CLOEXEC"),
        (libc::O_PATH, "O_PATH"),
        (libc::O_TMPFILE & !libc::O_DIRECTORY, "O_TMPFILE"),
    ];
    let mut rest = flags & !3;
    for (bit, name) in NAMED {
        if rest & bit == *bit && *bit != 0 {
            out.push('|');
            out.push_str(name);
            rest &= !bit;
        }
    }
    if rest != 0 {
        out.push_str(&format!("|{rest:#o}"));
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn flags_text() {
        assert_eq!(
            super::open_flags(libc::O_RDONLY | libc::O_CLOEXEC),
            "O_RDONLY|O_CLOEXEC"
        );
        assert_eq!(
            super::open_flags(libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC),
            "O_WRONLY|O_CREAT|O_TRUNC"
        );
    }
}
