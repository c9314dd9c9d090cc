//! dns probe, kernel side: messages on UDP port-53 sockets, and reads and
//! writes of TCP port-53 streams, of selected tasks (cut into messages and
//! parsed into queries by podscope-proto).

use podscope_model::{Event, EventData, ProbeKind, SockDataEvent, SockDataKind};

use crate::decode::{family_name, header, inet_addr, read_into, Clock};

crate::load::ring_probe!(
    "dns",
    DnsProbeSkel,
    DnsProbeSkelBuilder,
    dns_event,
    ProbeKind::Dns,
    counters: |p: &Probe| {
        vec![(
            "mmsg_messages_not_copied",
            crate::load::read_stat(&p.skel.maps.dns_stats, 0),
        )]
    }
);

/// The fixed part of a record before the message.
const HEAD: usize = std::mem::offset_of!(types::dns_event, data);

thread_local! {
    /// One record's fixed part, reused: the struct's payload array is large.
    static SCRATCH: std::cell::RefCell<Box<types::dns_event>> = std::cell::RefCell::new(Box::default());
}

fn decode(data: &[u8], clock: &Clock) -> Option<Event> {
    if data.len() < HEAD {
        return None;
    }
    SCRATCH.with_borrow_mut(|raw| {
        read_into(&mut **raw, &data[..HEAD]);
        let raw: &types::dns_event = raw;
        let payload = data.get(HEAD..HEAD + raw.captured as usize)?.to_vec();
        let h = header!(raw.hdr);
        let ev = EventData::SockData(SockDataEvent {
            kind: SockDataKind::Data,
            protocol: if raw.transport == 6 { "dns-tcp" } else { "dns" }.into(),
            tls: false,
            sock: raw.sock,
            fd: raw.fd,
            direction: if raw.dir == 1 { "tx" } else { "rx" }.into(),
            syscall: match raw.syscall {
                1 => "read",
                2 => "write",
                3 => "readv",
                4 => "writev",
                5 => "recvfrom",
                6 => "sendto",
                7 => "recvmsg",
                8 => "sendmsg",
                10 => "sendmmsg",
                11 => "recvmmsg",
                _ => "",
            }
            .into(),
            len: raw.len,
            seq: 0,
            family: family_name(raw.family).into(),
            saddr: inet_addr(raw.family, &raw.saddr),
            daddr: inet_addr(raw.family, &raw.daddr),
            sport: raw.sport,
            dport: raw.dport,
            payload,
        });
        Some(h.into_event(clock, ev))
    })
}
