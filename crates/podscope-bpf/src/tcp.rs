//! tcp probe: connect, accept, close with lifetime and bytes, failed connects,
//! retransmits and resets.

use podscope_model::{errno_name, Event, EventData, ProbeKind, TcpEvent, TcpKind};

use crate::decode::{family_name, header, inet_addr, read_record, Clock};

crate::load::ring_probe!(
    "tcp",
    TcpProbeSkel,
    TcpProbeSkelBuilder,
    tcp_event,
    ProbeKind::Tcp
);

fn state_name(state: u8) -> &'static str {
    match state {
        1 => "ESTABLISHED",
        2 => "SYN_SENT",
        3 => "SYN_RECV",
        4 => "FIN_WAIT1",
        5 => "FIN_WAIT2",
        6 => "TIME_WAIT",
        7 => "CLOSE",
        8 => "CLOSE_WAIT",
        9 => "LAST_ACK",
        10 => "LISTEN",
        11 => "CLOSING",
        12 => "NEW_SYN_RECV",
        _ => "UNKNOWN",
    }
}

fn decode(data: &[u8], clock: &Clock) -> Option<Event> {
    let raw: types::tcp_event = read_record(data);
    let kind = match raw.kind {
        1 => TcpKind::Connect,
        2 => TcpKind::Accept,
        3 => TcpKind::Close,
        4 => TcpKind::ConnectFailed,
        5 => TcpKind::Retransmit,
        6 => TcpKind::ResetSent,
        7 => TcpKind::ResetReceived,
        _ => return None,
    };
    let ends = matches!(kind, TcpKind::Close | TcpKind::ConnectFailed);
    let h = header!(raw.hdr);
    let data = EventData::Tcp(TcpEvent {
        dialed_addr: Box::default(),
        dialed_port: 0,
        kind,
        role: match raw.role {
            1 => "client",
            2 => "server",
            _ => "unknown",
        }
        .into(),
        family: family_name(raw.family).into(),
        saddr: inet_addr(raw.family, &raw.saddr),
        daddr: inet_addr(raw.family, &raw.daddr),
        sport: raw.sport,
        dport: raw.dport,
        state: state_name(raw.state).into(),
        duration_ns: ends.then_some(raw.duration_ns),
        tx_bytes: (kind == TcpKind::Close).then_some(raw.tx_bytes),
        rx_bytes: (kind == TcpKind::Close).then_some(raw.rx_bytes),
        retransmits: (kind == TcpKind::Close).then_some(raw.retransmits),
        error: (ends && raw.error != 0).then(|| errno_name(raw.error)),
    });
    Some(h.into_event(clock, data))
}
