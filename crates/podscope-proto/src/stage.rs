//! The pipeline stage: raw socket-data events in, one HTTP request event per
//! exchange out, per connection (pid + kernel socket), everything else
//! passed through in order.

use foldhash::{HashMap, HashMapExt};

use podscope_model::{
    DnsEvent, Event, EventData, HttpEvent, SockDataEvent, SockDataKind, Timestamp,
};

use crate::dns::{Lookup, TcpFraming, Tracker};

use crate::http1::{Connection, Exchange, Outcome, Side};

/// A connection's parser: by what the kernel sniffed it as (boxed: the two
/// differ in size and a map holds thousands).
#[derive(Debug)]
enum Parser {
    Http1(Box<Connection>),
    Http2(Box<crate::h2::Connection>),
}

impl Parser {
    fn for_protocol(protocol: &str, capture: &std::sync::Arc<crate::Capture>) -> Parser {
        if protocol == "http2" {
            Parser::Http2(Box::new(crate::h2::Connection::with_capture(
                capture.clone(),
            )))
        } else {
            Parser::Http1(Box::new(Connection::with_capture(capture.clone())))
        }
    }
    fn is_h2(&self) -> bool {
        matches!(self, Parser::Http2(_))
    }
    fn data(&mut self, at: u64, side: Side, seq: u64, payload: &[u8], len: u64) -> Vec<Outcome> {
        match self {
            Parser::Http1(c) => c.data(at, side, seq, payload, len),
            Parser::Http2(c) => c.data(at, side, seq, payload, len),
        }
    }
    fn close(&mut self, at: u64, why: &str) -> Vec<Outcome> {
        match self {
            Parser::Http1(c) => c.close(at, why),
            Parser::Http2(c) => c.close(at, why),
        }
    }
}

/// Connections followed at once; beyond that the least recently active one
/// is dropped (and counted).
const MAX_CONNECTIONS: usize = 16384;

/// What the stage saw, for the summary.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Request events produced (with or without a response).
    pub requests: u64,
    /// Requests the task answered.
    pub server: u64,
    /// Requests the task sent.
    pub client: u64,
    /// Requests reported without a response, or with an incomplete one.
    pub incomplete: u64,
    /// Requests whose head was not captured whole.
    pub truncated: u64,
    /// Places where the bytes were not HTTP/1.x (each is also an event).
    pub parse_errors: u64,
    /// Bytes missing from streams (holes in the kernel's byte offsets) or
    /// not recognisable as HTTP at a connection's start.
    pub lost_bytes: u64,
    /// Connections dropped because too many were open at once.
    pub evicted: u64,
    /// DNS messages seen.
    pub dns_messages: u64,
    /// DNS query events produced.
    pub dns_queries: u64,
    /// DNS queries reported without a response (or responses without a query).
    pub dns_incomplete: u64,
    /// Messages on port-53 sockets that were not DNS (or cut before the question).
    pub dns_unparsed: u64,
    /// DNS-over-TCP reads or writes that lost the framing: their uncaptured
    /// bytes ran into the next message's length, or a length was shorter
    /// than a DNS header (a stream joined mid-message). The message(s) in
    /// them are lost (counted here), and the stream starts over at its next
    /// read or write.
    pub dns_tcp_gaps: u64,
    /// HTTP/2 connections followed (also in the counts above).
    pub h2_connections: u64,
    /// HTTP/2 requests (streams) reported (also in `requests`).
    pub h2_requests: u64,
    /// gRPC calls among them.
    pub grpc_calls: u64,
    /// HTTP/2 requests reported with the header state unknown.
    pub h2_header_state_unknown: u64,
    /// HTTP/2 parse failures by reason (also in `parse_errors`).
    pub h2_failures: H2Failures,
    /// Request events not shown because only gRPC was asked for.
    pub not_grpc: u64,
    /// Requests that carried a valid trace context (W3C or B3).
    pub trace_context: u64,
    /// Requests whose trace-context headers were invalid (treated as none).
    pub trace_context_invalid: u64,
}

/// HTTP/2 parse failures by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct H2Failures {
    /// The client preface was wrong.
    pub bad_preface: u64,
    /// A header block did not decode (HPACK).
    pub hpack: u64,
    /// Padding or priority fields longer than their frame.
    pub bad_padding: u64,
    /// A header block longer than podscope keeps.
    pub block_too_long: u64,
    /// CONTINUATION frames out of place.
    pub bad_continuation: u64,
}

impl H2Failures {
    fn count(&mut self, reason: &str) {
        use crate::h2::Failure;
        if reason == Failure::BadPreface.reason() {
            self.bad_preface += 1;
        } else if reason.starts_with("http2: hpack") {
            self.hpack += 1;
        } else if reason == Failure::BadPadding.reason() {
            self.bad_padding += 1;
        } else if reason == Failure::BlockTooLong.reason() {
            self.block_too_long += 1;
        } else if reason == Failure::BadContinuation.reason() {
            self.bad_continuation += 1;
        }
    }
}

struct Conn {
    parser: Parser,
    /// The latest raw event of the connection: who, and the addresses.
    last: Event,
    tick: u64,
}

/// Turns the http probe's raw records into request events.
pub struct Stage {
    conns: HashMap<(u32, u64), Conn>,
    dns: Tracker,
    /// The latest raw DNS record per (pid, socket), for identity and addresses.
    dns_last: HashMap<(u32, u64), Event>,
    /// DNS-over-TCP streams being cut into messages, per (pid, socket, sent).
    dns_tcp: HashMap<(u32, u64, bool), TcpFraming>,
    tick: u64,
    stats: Stats,
    /// Show only gRPC calls (`trace grpc` without `http`).
    grpc_only: bool,
    /// Headers and bodies kept (`--capture-headers`, `--capture-body`).
    capture: std::sync::Arc<crate::Capture>,
}

impl std::fmt::Debug for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stage")
            .field("connections", &self.conns.len())
            .field("stats", &self.stats)
            .finish()
    }
}

impl Default for Stage {
    fn default() -> Self {
        Stage::new()
    }
}

impl Stage {
    /// A stage with no connections.
    pub fn new() -> Stage {
        Stage {
            conns: HashMap::new(),
            dns: Tracker::default(),
            dns_last: HashMap::new(),
            dns_tcp: HashMap::new(),
            tick: 0,
            stats: Stats::default(),
            grpc_only: false,
            capture: Default::default(),
        }
    }

    /// What new connections keep beyond the default fields.
    pub fn set_capture(&mut self, capture: crate::Capture) {
        self.capture = std::sync::Arc::new(capture);
    }

    /// Only gRPC calls become events (the `grpc` probe without `http`);
    /// the others are counted (`not_grpc`).
    pub fn set_grpc_only(&mut self, only: bool) {
        self.grpc_only = only;
    }

    /// Counts so far.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Connections being followed.
    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    /// Raw socket data in, request events out, other events through.
    pub fn process(&mut self, events: Vec<Event>) -> Vec<Event> {
        let mut out = Vec::with_capacity(events.len());
        for ev in events {
            let EventData::SockData(d) = &ev.data else {
                out.push(ev);
                continue;
            };
            if d.protocol == "dns" || d.protocol == "dns-tcp" {
                self.dns_record(ev, &mut out);
                continue;
            }
            self.tick += 1;
            // TLS plaintext and the socket's own bytes are two streams of one
            // socket (sockets are aligned, so the low bit is free to tell them apart).
            let key = (ev.pid, d.sock ^ u64::from(d.tls));
            let at = ev.timestamp.0;
            if d.kind == SockDataKind::Close {
                if let Some(mut c) = self.conns.remove(&key) {
                    let outcomes = c.parser.close(at, "connection closed");
                    self.emit(&c.last, outcomes, &mut out);
                }
                continue;
            }
            let side = if d.direction == "tx" {
                Side::Tx
            } else {
                Side::Rx
            };
            if !self.conns.contains_key(&key) && self.conns.len() >= MAX_CONNECTIONS {
                self.evict(&mut out);
            }
            let tick = self.tick;
            let (seq, len) = (d.seq, u64::from(d.len));
            let h2 = d.protocol == "http2";
            let protocol = d.protocol.clone();
            // The payload goes to the parser only; the stored copy is
            // without it, so keeping and cloning it is cheap.
            let mut ev = ev;
            let payload = match &mut ev.data {
                EventData::SockData(d) => std::mem::take(&mut d.payload),
                _ => Vec::new(),
            };
            if self.conns.get(&key).is_some_and(|c| c.parser.is_h2() != h2) {
                // A new socket at a freed one's address, its close unseen.
                if let Some(mut c) = self.conns.remove(&key) {
                    let outcomes = c.parser.close(at, "connection closed");
                    self.emit(&c.last, outcomes, &mut out);
                }
            }
            let stats = &mut self.stats;
            let capture = &self.capture;
            let c = self.conns.entry(key).or_insert_with(|| {
                if h2 {
                    stats.h2_connections += 1;
                }
                Conn {
                    parser: Parser::for_protocol(&protocol, capture),
                    last: ev.clone(),
                    tick,
                }
            });
            c.tick = tick;
            let outcomes = c.parser.data(at, side, seq, &payload, len);
            c.last = ev;
            if outcomes.is_empty() {
                continue;
            }
            // (The connection and the counts are separate fields: no copy
            // of the latest record is needed to emit from it.)
            emit(&mut self.stats, self.grpc_only, &c.last, outcomes, &mut out);
        }
        out
    }

    /// A port-53 record: one UDP message, or one read or write of a TCP
    /// stream (none, part of one, or several messages).
    fn dns_record(&mut self, mut ev: Event, out: &mut Vec<Event>) {
        let EventData::SockData(d) = &mut ev.data else {
            return;
        };
        if d.protocol == "dns" {
            let payload = std::mem::take(&mut d.payload);
            self.dns_message(&ev, &payload, out);
            return;
        }
        let key = (ev.pid, d.sock, d.direction == "tx");
        if !self.dns_tcp.contains_key(&key) && self.dns_tcp.len() >= MAX_CONNECTIONS {
            // Streams have no close record here: the oldest state goes, and
            // a message it was in the middle of is counted as a gap.
            self.stats.dns_tcp_gaps +=
                self.dns_tcp.values().filter(|f| f.mid_message()).count() as u64;
            self.dns_tcp.clear();
        }
        let payload = std::mem::take(&mut d.payload);
        let missed = (d.len as usize).saturating_sub(payload.len());
        let mut messages = Vec::new();
        if !self
            .dns_tcp
            .entry(key)
            .or_default()
            .push(&payload, missed, &mut messages)
        {
            self.stats.dns_tcp_gaps += 1;
        }
        let mut parsed = true;
        for m in messages {
            parsed &= self.dns_message(&ev, &m, out);
        }
        if !parsed {
            if let Some(f) = self.dns_tcp.get_mut(&key) {
                f.resync();
            }
        }
    }

    /// One DNS message `msg` carried by the record `ev`; false if it was not DNS.
    fn dns_message(&mut self, ev: &Event, msg: &[u8], out: &mut Vec<Event>) -> bool {
        let EventData::SockData(d) = &ev.data else {
            return false;
        };
        self.stats.dns_messages += 1;
        let Some(m) = crate::dns::parse(msg) else {
            self.stats.dns_unparsed += 1;
            return false;
        };
        let key = (ev.pid, d.sock);
        let mut done = Vec::new();
        let sent = d.direction == "tx";
        self.dns
            .message(ev.pid, d.sock, ev.timestamp.0, sent, m, &mut done);
        if self.dns_last.len() >= MAX_CONNECTIONS && !self.dns_last.contains_key(&key) {
            // Only the identity of older sockets' late answers is lost.
            self.dns_last.clear();
        }
        self.dns_last.insert(key, ev.clone());
        let last = self.dns_last[&key].clone();
        for l in done {
            self.emit_dns(&last, l, out);
        }
        true
    }

    fn emit_dns(&mut self, last: &Event, l: Lookup, out: &mut Vec<Event>) {
        let EventData::SockData(d) = &last.data else {
            return;
        };
        self.stats.dns_queries += 1;
        if l.error.is_some() {
            self.stats.dns_incomplete += 1;
        }
        let answered = l.message.response;
        let ev = DnsEvent {
            dialed_addr: String::new(),
            dialed_port: 0,
            kind: "query".into(),
            role: if l.server { "server" } else { "client" }.into(),
            id: l.message.id,
            name: l.message.name,
            qtype: l.message.qtype,
            rcode: answered.then_some(l.message.rcode),
            transport: match (&*d.protocol, d.tls) {
                ("dns-tcp", true) => "tls",
                ("dns-tcp", false) => "tcp",
                _ => "udp",
            }
            .into(),
            answers: l.message.answers,
            latency_ns: l.latency_ns,
            family: d.family.to_string(),
            saddr: d.saddr.clone(),
            sport: d.sport,
            daddr: d.daddr.clone(),
            dport: d.dport,
            peer_namespace: String::new(),
            peer_pod: String::new(),
            error: l.error,
        };
        out.push(Event {
            timestamp: Timestamp(l.start_ns),
            identity: last.identity.clone(),
            pid: last.pid,
            tid: last.tid,
            uid: last.uid,
            comm: last.comm.clone(),
            cgroup_id: last.cgroup_id,
            data: EventData::Dns(Box::new(ev)),
        });
    }

    /// The trace ends: requests still waiting are reported, not dropped.
    pub fn finish(&mut self) -> Vec<Event> {
        let mut out = Vec::new();
        for (key, l) in self.dns.finish() {
            match self.dns_last.get(&key).cloned() {
                Some(last) => self.emit_dns(&last, l, &mut out),
                None => {
                    self.stats.dns_queries += 1;
                    self.stats.dns_incomplete += 1;
                }
            }
        }
        let now = Timestamp::now().0;
        let mut conns: Vec<Conn> = self.conns.drain().map(|(_, c)| c).collect();
        conns.sort_by_key(|c| c.tick);
        for mut c in conns {
            let outcomes = c.parser.close(now, "the trace ended first");
            self.emit(&c.last, outcomes, &mut out);
        }
        out
    }

    fn evict(&mut self, out: &mut Vec<Event>) {
        let Some(key) = self
            .conns
            .iter()
            .min_by_key(|(_, c)| c.tick)
            .map(|(k, _)| *k)
        else {
            return;
        };
        if let Some(mut c) = self.conns.remove(&key) {
            self.stats.evicted += 1;
            let outcomes = c
                .parser
                .close(c.last.timestamp.0, "too many connections open at once");
            self.emit(&c.last, outcomes, out);
        }
    }

    fn emit(&mut self, last: &Event, outcomes: Vec<Outcome>, out: &mut Vec<Event>) {
        emit(&mut self.stats, self.grpc_only, last, outcomes, out);
    }

    /// The stage's lines for the end-of-trace summary (stderr): one per
    /// protocol among `probes`, with the probes' own kernel `counters`.
    pub fn summary_text(
        &self,
        probes: &[podscope_model::ProbeKind],
        counters: &[(podscope_model::ProbeKind, &str, u64)],
    ) -> String {
        use podscope_model::ProbeKind;
        let s = &self.stats;
        let mut text = String::new();
        if probes.contains(&ProbeKind::Dns) {
            let not_copied = counters
                .iter()
                .find(|(p, n, _)| *p == ProbeKind::Dns && *n == "mmsg_messages_not_copied")
                .map_or(0, |c| c.2);
            text.push_str(&format!(
                "podscope: dns: {} messages, {} queries, {} without an answer or a query, {} messages not DNS, {} TCP stream gaps, {} messages past the first 4 of a sendmmsg/recvmmsg (not copied)\n",
                s.dns_messages, s.dns_queries, s.dns_incomplete, s.dns_unparsed, s.dns_tcp_gaps, not_copied
            ));
        }
        if probes.contains(&ProbeKind::Tls) {
            let tls = |name: &str| {
                counters
                    .iter()
                    .find(|(p, n, _)| *p == ProbeKind::Tls && *n == name)
                    .map_or(0, |c| c.2)
            };
            text.push_str(&format!(
                "podscope: tls: {} libssl files and {} Go programs attached ({} uprobes; {} Go \
                 programs with crypto/tls not supported), {} attach failures; socket of each call: {} from its syscall, {} from its Go conn, {} from its SSL object, {} from its thread, {} unknown (not reported); \
                 {} connections were another protocol ({} bytes counted, not copied)\n",
                tls("libssl_files"),
                tls("go_programs"),
                tls("uprobes"),
                tls("go_unsupported"),
                tls("attach_failures"),
                tls("socket_from_syscall"),
                tls("socket_from_go_conn"),
                tls("socket_from_ssl"),
                tls("socket_from_thread"),
                tls("no_socket"),
                tls("connections_not_http"),
                tls("bytes_not_http"),
            ));
        }
        if !probes.contains(&ProbeKind::Http)
            && !probes.contains(&ProbeKind::Tls)
            && !probes.contains(&ProbeKind::Grpc)
        {
            return text;
        }
        let counter = |name: &str| {
            counters
                .iter()
                .find(|(p, n, _)| *p == ProbeKind::Http && *n == name)
                .map_or(0, |c| c.2)
        };
        if probes.contains(&ProbeKind::Http) {
            text.push_str(&format!(
                "podscope: http: {} connections were another protocol ({} bytes counted, not copied)\n",
                counter("connections_not_http"),
                counter("bytes_not_http")
            ));
        }
        text + &format!(
            "podscope: http: {} requests ({} served, {} sent), {} incomplete, {} with truncated heads, \
             {} parse errors, {} bytes not parsed (lost or unrecognised), {} connections evicted; \
             trace context: {} requests carried one, {} invalid ones ignored\n",
            s.requests,
            s.server,
            s.client,
            s.incomplete,
            s.truncated,
            s.parse_errors,
            s.lost_bytes,
            s.evicted,
            s.trace_context,
            s.trace_context_invalid
        ) + &format!(
            "podscope: http2: {} connections, {} requests ({} gRPC calls), {} with the header state unknown; \
             parse errors: {} preface, {} hpack, {} padding, {} block too long, {} continuation{}\n",
            s.h2_connections,
            s.h2_requests,
            s.grpc_calls,
            s.h2_header_state_unknown,
            s.h2_failures.bad_preface,
            s.h2_failures.hpack,
            s.h2_failures.bad_padding,
            s.h2_failures.block_too_long,
            s.h2_failures.bad_continuation,
            if self.grpc_only {
                format!("; {} requests not gRPC left out", s.not_grpc)
            } else {
                String::new()
            }
        )
    }
}

fn blank(d: &SockDataEvent) -> HttpEvent {
    HttpEvent {
        dialed_addr: String::new(),
        dialed_port: 0,
        stream_id: 0,
        kind: "request".into(),
        role: String::new(),
        version: String::new(),
        method: String::new(),
        path: String::new(),
        host: String::new(),
        status: None,
        duration_ns: 0,
        request_bytes: 0,
        response_bytes: 0,
        truncated: false,
        tls: d.tls,
        family: d.family.to_string(),
        saddr: d.saddr.clone(),
        sport: d.sport,
        daddr: d.daddr.clone(),
        dport: d.dport,
        peer_namespace: String::new(),
        peer_pod: String::new(),
        error: None,
        rpc: None,
        trace_context: None,
        capture: None,
    }
}

fn exchange(d: &SockDataEvent, x: Exchange) -> HttpEvent {
    HttpEvent {
        dialed_addr: String::new(),
        dialed_port: 0,
        stream_id: x.stream,
        role: if x.server { "server" } else { "client" }.into(),
        version: x.version,
        method: x.method,
        path: x.path,
        host: x.host,
        status: x.status,
        duration_ns: x.end_ns.saturating_sub(x.start_ns),
        request_bytes: x.request_bytes,
        response_bytes: x.response_bytes,
        truncated: x.truncated,
        error: x.error,
        rpc: x.rpc.map(|r| *r),
        trace_context: match x.trace {
            crate::tracectx::Pickup::Valid(c) => Some(c),
            _ => None,
        },
        capture: x.captured,
        ..blank(d)
    }
}

/// The parsers' outcomes for one connection as events (and counts), with
/// `last` (its latest record) for who and where.
fn emit(
    stats: &mut Stats,
    grpc_only: bool,
    last: &Event,
    outcomes: Vec<Outcome>,
    out: &mut Vec<Event>,
) {
    let EventData::SockData(d) = &last.data else {
        return;
    };

    for o in outcomes {
        match o {
            Outcome::Lost { bytes } => stats.lost_bytes += bytes,
            Outcome::ParseError { at_ns, reason } => {
                stats.parse_errors += 1;
                stats.h2_failures.count(&reason);
                out.push(request_event(
                    last,
                    d,
                    Timestamp(at_ns),
                    HttpEvent {
                        kind: "parse_error".into(),
                        error: Some(reason),
                        ..blank(d)
                    },
                ));
            }
            Outcome::Exchange(x) => {
                if grpc_only && x.rpc.is_none() {
                    stats.not_grpc += 1;
                    continue;
                }
                if x.version == "HTTP/2" {
                    stats.h2_requests += 1;
                    if x.error
                        .as_deref()
                        .is_some_and(|e| e.contains(crate::h2::HEADER_STATE_UNKNOWN))
                    {
                        stats.h2_header_state_unknown += 1;
                    }
                }
                if x.rpc.is_some() {
                    stats.grpc_calls += 1;
                }
                stats.requests += 1;
                if x.server {
                    stats.server += 1;
                } else {
                    stats.client += 1;
                }
                if x.truncated {
                    stats.truncated += 1;
                }
                if x.error.is_some() {
                    stats.incomplete += 1;
                }
                match &x.trace {
                    crate::tracectx::Pickup::Valid(_) => stats.trace_context += 1,
                    crate::tracectx::Pickup::Invalid(_) => stats.trace_context_invalid += 1,
                    crate::tracectx::Pickup::None => {}
                }
                let at = Timestamp(x.start_ns);
                out.push(request_event(last, d, at, exchange(d, x)));
            }
        }
    }
}

fn request_event(last: &Event, _d: &SockDataEvent, at: Timestamp, h: HttpEvent) -> Event {
    Event {
        timestamp: at,
        identity: last.identity.clone(),
        pid: last.pid,
        tid: last.tid,
        uid: last.uid,
        comm: last.comm.clone(),
        cgroup_id: last.cgroup_id,
        data: EventData::Http(Box::new(h)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use podscope_model::{Identity, OpenEvent};

    fn ev(ts: u64, pid: u32, data: EventData) -> Event {
        Event {
            timestamp: Timestamp(ts),
            identity: Identity {
                pod: "web-0".into(),
                ..Identity::default()
            },
            pid,
            tid: pid,
            uid: 0,
            comm: "srv".into(),
            cgroup_id: 7,
            data,
        }
    }

    fn raw(kind: SockDataKind, dir: &'static str, seq: u64, payload: &[u8]) -> EventData {
        EventData::SockData(SockDataEvent {
            kind,
            protocol: "http".into(),
            tls: false,
            sock: 0xffff_8880_1234_5678,
            fd: 5,
            direction: dir.into(),
            syscall: "read".into(),
            len: payload.len() as u32,
            seq,
            family: "ipv4".into(),
            saddr: "10.0.0.1".into(),
            daddr: "10.0.0.2".into(),
            sport: 80,
            dport: 40000,
            payload: payload.to_vec(),
        })
    }

    fn open() -> EventData {
        EventData::Open(OpenEvent {
            kind: "open".into(),
            path: "/etc/hosts".into(),
            dirfd: None,
            flags: 0,
            flags_str: "O_RDONLY".into(),
            mode: 0,
            fd: Some(3),
            errno: None,
            error: None,
        })
    }

    #[test]
    fn raw_data_in_request_events_out_others_through_in_order() {
        let mut st = Stage::new();
        let req = b"GET /a?b=c HTTP/1.1\r\nHost: web\r\n\r\n";
        let resp = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
        let out = st.process(vec![
            ev(1_000, 9, open()),
            ev(2_000, 9, raw(SockDataKind::Data, "rx", 0, req)),
            ev(3_000, 9, open()),
            ev(5_000, 9, raw(SockDataKind::Data, "tx", 0, resp)),
            // A second request the trace ends before answering.
            ev(
                6_000,
                9,
                raw(SockDataKind::Data, "rx", req.len() as u64, req),
            ),
        ]);
        let kinds: Vec<&str> = out.iter().map(|e| e.kind()).collect();
        assert_eq!(kinds, ["open", "open", "request"]);
        let EventData::Http(h) = &out[2].data else {
            panic!("{out:?}")
        };
        assert_eq!(
            (
                h.role.as_str(),
                h.method.as_str(),
                h.path.as_str(),
                h.status
            ),
            ("server", "GET", "/a?b=?", Some(200))
        );
        assert_eq!(h.duration_ns, 3_000);
        assert_eq!(out[2].timestamp, Timestamp(2_000));
        assert_eq!(out[2].identity.pod, "web-0");
        assert_eq!((h.daddr.as_str(), h.dport), ("10.0.0.2", 40000));
        let rest = st.finish();
        assert_eq!(rest.len(), 1);
        let EventData::Http(h) = &rest[0].data else {
            panic!()
        };
        assert_eq!(
            h.error.as_deref(),
            Some("no response: the trace ended first")
        );
        assert_eq!(st.stats().requests, 2);
        assert_eq!(st.stats().incomplete, 1);
        assert_eq!(st.connections(), 0);
    }

    fn h2(dir: &'static str, seq: u64, payload: &[u8]) -> EventData {
        let mut d = raw(SockDataKind::Data, dir, seq, payload);
        if let EventData::SockData(s) = &mut d {
            s.protocol = "http2".into();
        }
        d
    }

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = payload.len() as u32;
        let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
        f.extend_from_slice(&stream.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn http2_streams_become_requests_and_grpc_only_leaves_the_others_out() {
        for grpc_only in [false, true] {
            let mut st = Stage::new();
            st.set_grpc_only(grpc_only);
            let mut req = crate::h2::PREFACE.to_vec();
            // :method GET (2), :path / (4), literal content-type (31) = application/grpc
            req.extend(frame(1, 5, 1, &[0x82, 0x84]));
            let mut grpc = vec![0x83, 0x04, 0x08];
            grpc.extend_from_slice(b"/svc/Get");
            grpc.extend([0x0f, 0x10, 16]);
            grpc.extend_from_slice(b"application/grpc");
            req.extend(frame(1, 4, 3, &grpc));
            req.extend(frame(0, 1, 3, &[0, 0, 0, 0, 0]));
            // :status 200 (8); trailers grpc-status 0 (literal, new name).
            let mut resp = frame(1, 5, 1, &[0x88]);
            resp.extend(frame(1, 4, 3, &[0x88]));
            let mut trailers = vec![0x00, 11];
            trailers.extend_from_slice(b"grpc-status");
            trailers.extend([1, b'0']);
            resp.extend(frame(1, 5, 3, &trailers));
            let out = st.process(vec![
                ev(1_000, 9, h2("rx", 0, &req)),
                ev(2_000, 9, h2("tx", 0, &resp)),
            ]);
            let hs: Vec<&HttpEvent> = out
                .iter()
                .filter_map(|e| match &e.data {
                    EventData::Http(h) => Some(h.as_ref()),
                    _ => None,
                })
                .collect();
            assert_eq!(hs.len(), if grpc_only { 1 } else { 2 }, "{out:?}");
            let g = hs.last().unwrap();
            assert_eq!((g.role.as_str(), g.version.as_str()), ("server", "HTTP/2"));
            let rpc = g.rpc.as_ref().unwrap();
            assert_eq!(
                (rpc.service.as_str(), rpc.method.as_str(), rpc.status),
                ("svc", "Get", Some(0))
            );
            assert_eq!(st.stats().not_grpc, u64::from(grpc_only));
            assert_eq!(st.stats().grpc_calls, 1);
            assert_eq!(st.stats().h2_connections, 1);
        }
    }

    #[test]
    fn tls_plaintext_and_the_sockets_own_bytes_are_separate_streams() {
        let mut st = Stage::new();
        let tls = |ts, dir: &'static str, seq, p: &[u8]| {
            let mut d = raw(SockDataKind::Data, dir, seq, p);
            if let EventData::SockData(s) = &mut d {
                s.tls = true;
            }
            ev(ts, 9, d)
        };
        let req = b"GET /s HTTP/1.1\r\nHost: web\r\n\r\n";
        let resp = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
        let out = st.process(vec![
            tls(1, "rx", 0, req),
            // The same socket's own bytes at offset 0 too (a plain exchange
            // cannot really share it; the streams must not mix if it did).
            ev(
                2,
                9,
                raw(SockDataKind::Data, "rx", 0, b"GET /p HTTP/1.1\r\n\r\n"),
            ),
            tls(3, "tx", 0, resp),
        ]);
        assert_eq!(out.len(), 1, "{out:?}");
        let EventData::Http(h) = &out[0].data else {
            panic!()
        };
        assert_eq!((h.path.as_str(), h.status, h.tls), ("/s", Some(200), true));
        assert_eq!(st.connections(), 2);
    }

    #[test]
    fn close_ends_a_response_without_length() {
        let mut st = Stage::new();
        let out = st.process(vec![
            ev(
                1,
                4,
                raw(SockDataKind::Data, "tx", 0, b"GET / HTTP/1.0\r\n\r\n"),
            ),
            ev(
                2,
                4,
                raw(SockDataKind::Data, "rx", 0, b"HTTP/1.0 200 OK\r\n\r\nbody"),
            ),
            ev(5_000, 4, raw(SockDataKind::Close, "", 0, b"")),
        ]);
        assert_eq!(out.len(), 1);
        let EventData::Http(h) = &out[0].data else {
            panic!()
        };
        assert_eq!(
            (h.role.as_str(), h.status, h.error.is_none()),
            ("client", Some(200), true)
        );
        assert_eq!(
            h.duration_ns, 1,
            "the response ended with its last bytes, not at the close"
        );
        assert_eq!(st.connections(), 0);
    }

    #[test]
    fn trace_context_is_picked_up_and_invalid_is_counted() {
        let mut st = Stage::new();
        let good = b"GET /o HTTP/1.1\r\nHost: api\r\n\
traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n\
Authorization: Bearer x\r\n\r\n";
        let bad = b"GET /p HTTP/1.1\r\ntraceparent: 00-zz\r\n\r\n";
        let resp = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
        let out = st.process(vec![
            ev(1, 9, raw(SockDataKind::Data, "rx", 0, good)),
            ev(2, 9, raw(SockDataKind::Data, "tx", 0, resp)),
            ev(3, 9, raw(SockDataKind::Data, "rx", good.len() as u64, bad)),
            ev(4, 9, raw(SockDataKind::Data, "tx", resp.len() as u64, resp)),
        ]);
        let hs: Vec<&HttpEvent> = out
            .iter()
            .filter_map(|e| match &e.data {
                EventData::Http(h) => Some(h.as_ref()),
                _ => None,
            })
            .collect();
        assert_eq!(hs.len(), 2);
        let c = hs[0].trace_context.as_ref().expect("context");
        assert_eq!(
            (c.trace_id.as_str(), c.span_id.as_str()),
            ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7")
        );
        assert_eq!(hs[1].trace_context, None);
        assert_eq!(
            (st.stats().trace_context, st.stats().trace_context_invalid),
            (1, 1)
        );
        let json = serde_json::to_string(&out[0]).unwrap();
        assert!(
            json.contains("\"trace_context\":{\"format\":\"w3c\""),
            "{json}"
        );
        assert!(!json.contains("Bearer"), "{json}");
    }

    #[test]
    fn http2_requests_carry_their_trace_context() {
        let mut st = Stage::new();
        let mut req = crate::h2::PREFACE.to_vec();
        // :method GET, :path /, then literal b3 (new name, not indexed).
        let mut block = vec![0x82, 0x84, 0x00, 2];
        block.extend_from_slice(b"b3");
        let v = b"80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1";
        block.push(v.len() as u8);
        block.extend_from_slice(v);
        req.extend(frame(1, 5, 1, &block));
        let resp = frame(1, 5, 1, &[0x88]);
        let out = st.process(vec![
            ev(1_000, 9, h2("rx", 0, &req)),
            ev(2_000, 9, h2("tx", 0, &resp)),
        ]);
        let EventData::Http(h) = &out[0].data else {
            panic!("{out:?}")
        };
        let c = h.trace_context.as_ref().expect("context");
        assert_eq!(
            (c.format.as_str(), c.trace_id.as_str(), c.span_id.as_str()),
            ("b3", "80f198ee56343ba864fe8b2a57d3eff7", "e457b5a2e4d86bd1")
        );
        assert_eq!(st.stats().trace_context, 1);
    }

    /// A DNS-over-TCP record: `len` bytes moved, `payload` the first of them.
    fn dns_tcp(dir: &'static str, payload: &[u8], len: u32) -> EventData {
        let mut d = raw(SockDataKind::Data, dir, 0, payload);
        if let EventData::SockData(d) = &mut d {
            d.protocol = "dns-tcp".into();
            d.len = len;
            d.dport = 53;
        }
        d
    }

    /// `id`'s query (for `a.test`, A) or its answer, after its TCP length.
    fn framed_dns(id: u16, answer: bool) -> Vec<u8> {
        let mut m = vec![(id >> 8) as u8, id as u8, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        m.extend_from_slice(b"\x01a\x04test\x00\x00\x01\x00\x01");
        if answer {
            m[2] = 0x81;
            m[3] = 0x80;
        }
        let mut f = (m.len() as u16).to_be_bytes().to_vec();
        f.extend_from_slice(&m);
        f
    }

    #[test]
    fn dns_over_tcp_is_cut_into_queries_and_a_stream_joined_mid_message_recovers() {
        let mut st = Stage::new();
        let (q1, a1, q2, a2) = (
            framed_dns(1, false),
            framed_dns(1, true),
            framed_dns(2, false),
            framed_dns(2, true),
        );
        // Joined in the middle of a message: the tail of one, then whole ones.
        let out = st.process(vec![
            ev(10, 4, dns_tcp("tx", &q1[5..], (q1.len() - 5) as u32)),
            ev(20, 4, dns_tcp("tx", &q2, q2.len() as u32)),
            ev(30, 4, dns_tcp("rx", &a2[..1], 1)),
            ev(31, 4, dns_tcp("rx", &a2[1..], (a2.len() - 1) as u32)),
            // Two messages in one read.
            ev(
                40,
                4,
                dns_tcp(
                    "tx",
                    &[q1.clone(), q2.clone()].concat(),
                    2 * q1.len() as u32,
                ),
            ),
            ev(
                50,
                4,
                dns_tcp(
                    "rx",
                    &[a1.clone(), a2.clone()].concat(),
                    2 * a1.len() as u32,
                ),
            ),
        ]);
        let done: Vec<(u16, Option<u64>, &str)> = out
            .iter()
            .filter_map(|e| match &e.data {
                EventData::Dns(d) => Some((d.id, d.latency_ns, d.transport.as_str())),
                _ => None,
            })
            .collect();
        assert_eq!(
            done,
            [
                (2, Some(11), "tcp"),
                (1, Some(10), "tcp"),
                (2, Some(10), "tcp")
            ]
        );
        let s = st.stats();
        // The tail's first bytes are no length (0): a gap; then six messages.
        assert_eq!(
            (
                s.dns_messages,
                s.dns_unparsed,
                s.dns_queries,
                s.dns_tcp_gaps
            ),
            (6, 0, 3, 1)
        );
        // A read whose uncaptured bytes ran into the next length: a gap.
        let mut long = q1.clone();
        long.extend_from_slice(&q2);
        let out = st.process(vec![
            ev(60, 4, dns_tcp("tx", &long[..3], long.len() as u32)),
            ev(70, 4, dns_tcp("tx", &q1, q1.len() as u32)),
        ]);
        assert!(out.is_empty());
        assert_eq!(st.stats().dns_tcp_gaps, 2);
        assert_eq!(st.dns.pending(), 1, "the query after the gap waits");
    }
}
