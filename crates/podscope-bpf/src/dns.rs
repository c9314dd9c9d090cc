//! dns probe, kernel side: messages on UDP port-53 sockets of selected tasks
//! (parsed into queries by podscope-proto).

use std::net::{Ipv4Addr, Ipv6Addr};

use podscope_model::{Event, EventData, ProbeKind, SockDataEvent, SockDataKind};

use crate::decode::{header, read_record, Clock};

crate::load::ring_probe!(
    "dns",
    DnsProbeSkel,
    DnsProbeSkelBuilder,
    dns_event,
    ProbeKind::Dns
);

const AF_INET6: u16 = 10;

fn addr(family: u16, raw: &[u8; 16]) -> String {
    if family == AF_INET6 {
        Ipv6Addr::from(*raw).to_string()
    } else {
        Ipv4Addr::new(raw[0], raw[1], raw[2], raw[3]).to_string()
    }
}

/// The fixed part of a record before the message.
const HEAD: usize = std::mem::offset_of!(types::dns_event, data);

fn decode(data: &[u8], clock: &Clock) -> Option<Event> {
    if data.len() < HEAD {
        return None;
    }
    let raw: types::dns_event = read_record(&data[..HEAD]);
    let payload = data.get(HEAD..HEAD + raw.captured as usize)?.to_vec();
    let h = header!(raw.hdr);
    let ev = EventData::SockData(SockDataEvent {
        kind: SockDataKind::Data,
        protocol: "dns".into(),
        sock: raw.sock,
        fd: raw.fd,
        direction: if raw.dir == 1 { "tx" } else { "rx" }.into(),
        syscall: match raw.syscall {
            1 => "read",
            2 => "write",
            5 => "recvfrom",
            6 => "sendto",
            7 => "recvmsg",
            8 => "sendmsg",
            10 => "sendmmsg",
            _ => "",
        }
        .into(),
        len: raw.len,
        seq: 0,
        family: if raw.family == AF_INET6 {
            "ipv6"
        } else {
            "ipv4"
        }
        .into(),
        saddr: addr(raw.family, &raw.saddr),
        daddr: addr(raw.family, &raw.daddr),
        sport: raw.sport,
        dport: raw.dport,
        payload,
    });
    Some(h.into_event(clock, ev))
}
