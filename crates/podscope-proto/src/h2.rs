//! One HTTP/2 connection (h2c, or h2 once TLS plaintext is captured) seen
//! from one end: two byte streams of frames with holes, turned into one
//! exchange per stream (request headers to the response's END_STREAM), with
//! gRPC service, method and status where the content type says gRPC.
//!
//! Each direction is a frame reader and an HPACK decoder ([`crate::hpack`]).
//! Only what a request event needs is kept: header blocks until decoded,
//! SETTINGS, RST_STREAM and GOAWAY payloads; DATA payloads are skipped (with
//! `--capture-body N`, their first N bytes per stream and direction are kept,
//! de-padded), so a hole inside one (a long message captured only in part, a
//! sendfile body) costs nothing but cuts a kept body there. A hole that covers a frame header loses the frame sync:
//! that direction waits for a read or write that starts with a plausible
//! frame header, and its HPACK table becomes partial (requests after it are
//! reported with what is still known and a reason).
//!
//! A connection seen from its start begins with the client preface in the
//! client's direction; one joined later (podscope attached to a running
//! program) starts wherever the kernel first saw it: its header state is
//! unknown, and every request on it says so.

use std::collections::HashMap;

use podscope_model::RpcInfo;

use crate::hpack::{Decoder, Field};
use crate::http1::{Exchange, Outcome, Side};
use crate::redact::redact_query;

/// The client connection preface.
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Header block bytes kept per direction while its CONTINUATIONs come.
const MAX_BLOCK: usize = 64 * 1024;
/// Control-frame payload bytes kept (SETTINGS, GOAWAY, ...); beyond, skipped.
const MAX_CONTROL: usize = 4096;
/// Streams followed at once per connection; more are reported early.
const MAX_STREAMS: usize = 1024;
/// A grpc-message longer than this is cut.
const MAX_GRPC_MESSAGE: usize = 256;

/// The reason on requests of a connection whose HPACK state is not known.
pub const HEADER_STATE_UNKNOWN: &str =
    "http2 header state unknown (connection opened before the trace, or header frames lost)";

/// Parse failures, by reason (counted by the stage).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The client's first bytes were not the preface.
    BadPreface,
    /// A header block did not decode.
    Hpack(crate::hpack::Error),
    /// Padding longer than the frame, or a HEADERS/PRIORITY frame too short.
    BadPadding,
    /// A header block longer than podscope keeps.
    BlockTooLong,
    /// A CONTINUATION without a HEADERS before it, or another frame inside
    /// a header block.
    BadContinuation,
    /// Bytes where a frame header should be that do not look like one
    /// (after a hole): the direction skips to the next plausible one.
    LostSync,
}

impl Failure {
    /// Text for events and the summary.
    pub fn reason(self) -> &'static str {
        match self {
            Failure::BadPreface => "http2: client preface invalid",
            Failure::Hpack(e) => match e {
                crate::hpack::Error::Truncated => "http2: hpack block ends inside a field",
                crate::hpack::Error::IntegerOverflow => "http2: hpack integer overflow",
                crate::hpack::Error::BadIndex => "http2: hpack index not in the table",
                crate::hpack::Error::Huffman => "http2: hpack huffman string invalid",
                crate::hpack::Error::StringTooLong => "http2: hpack string too long",
                crate::hpack::Error::SizeAboveSetting => {
                    "http2: hpack table size update above the peer's setting"
                }
            },
            Failure::BadPadding => "http2: frame padding or priority longer than the frame",
            Failure::BlockTooLong => "http2: header block longer than 64 KiB",
            Failure::BadContinuation => "http2: CONTINUATION out of place",
            Failure::LostSync => "http2: frame sync lost after missing bytes",
        }
    }
}

const DATA: u8 = 0;
const HEADERS: u8 = 1;
const RST_STREAM: u8 = 3;
const SETTINGS: u8 = 4;
const PUSH_PROMISE: u8 = 5;
const GOAWAY: u8 = 7;
const CONTINUATION: u8 = 9;

const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;

#[derive(Debug, Clone, Copy)]
struct FrameHeader {
    len: u32,
    kind: u8,
    flags: u8,
    stream: u32,
}

fn frame_header(b: &[u8; 9]) -> FrameHeader {
    FrameHeader {
        len: u32::from_be_bytes([0, b[0], b[1], b[2]]),
        kind: b[3],
        flags: b[4],
        stream: u32::from_be_bytes([b[5], b[6], b[7], b[8]]) & 0x7fff_ffff,
    }
}

/// The kernel's test (bpf/include/sniff.bpf.h), for regaining sync: a known
/// type, a length within 16384, only that type's flags, the stream rules.
pub fn plausible_frame_header(b: &[u8]) -> bool {
    let Ok(h) = <[u8; 9]>::try_from(b.get(..9).unwrap_or(&[])) else {
        return false;
    };
    if h[5] & 0x80 != 0 {
        return false;
    }
    let f = frame_header(&h);
    if f.len > 16384 {
        return false;
    }
    let sid = f.stream != 0;
    let (allowed, ok) = match f.kind {
        0 => (0x09, sid),
        1 => (0x2d, sid && f.len > 0),
        2 => (0, sid && f.len == 5),
        3 => (0, sid && f.len == 4),
        4 => (
            0x01,
            !sid && f.len.is_multiple_of(6) && (f.flags & 1 == 0 || f.len == 0),
        ),
        5 => (0x0c, sid && f.len >= 4),
        6 => (0x01, !sid && f.len == 8),
        7 => (0, !sid && f.len >= 8),
        8 => (0, f.len == 4),
        9 => (0x04, sid && f.len > 0),
        _ => (0, false),
    };
    ok && f.flags & !allowed == 0
}

#[derive(Debug)]
enum State {
    /// At the start of a direction seen from the connection's start: the
    /// preface bytes still to come (client side only).
    Preface(usize),
    /// Reading a frame header (bytes so far).
    Header,
    /// Inside a frame's payload.
    Payload {
        frame: FrameHeader,
        left: u64,
        /// The payload is being kept (header blocks, control frames).
        keep: bool,
        /// Part of the kept payload was missing.
        broken: bool,
    },
    /// Out of sync: wait for a read/write that starts with a frame header.
    Skip,
}

/// A header block being collected (HEADERS or PUSH_PROMISE + CONTINUATIONs).
#[derive(Debug)]
struct Block {
    stream: u32,
    end_stream: bool,
    push: bool,
    bytes: Vec<u8>,
    broken: bool,
    /// Frame bytes of the block (headers and payloads), for the stream's size.
    wire: u64,
}

#[derive(Debug)]
struct Dir {
    state: State,
    hdr: Vec<u8>,
    payload: Vec<u8>,
    block: Option<Block>,
    hpack: Decoder,
    /// Direction has carried bytes.
    started: bool,
    /// The time of the read or write being fed.
    now: u64,
    /// DATA payload bytes kept per frame (`--capture-body`; 0: skipped).
    body: usize,
}

impl Dir {
    fn new() -> Dir {
        Dir {
            state: State::Header,
            hdr: Vec::with_capacity(9),
            payload: Vec::new(),
            block: None,
            hpack: Decoder::new(false),
            started: false,
            now: 0,
            body: 0,
        }
    }
}

#[derive(Debug, Default)]
struct Stream {
    ex: Exchange,
    request_seen: bool,
    request_done: bool,
    response_done: bool,
    response_headers: bool,
    grpc: bool,
    grpc_status: Option<u32>,
    grpc_message: Option<String>,
    header_state_unknown: bool,
    /// `--capture-body`: the first bytes of the request's and the
    /// response's DATA, and whether a hole cut them (nothing more is kept).
    bodies: [(Vec<u8>, bool); 2],
}

/// What the frame readers tell the connection.
#[derive(Debug)]
enum Ev {
    /// A whole header block for a stream.
    Headers {
        stream: u32,
        end_stream: bool,
        push: bool,
        fields: Vec<Field>,
        /// The fields may be incomplete (partial table, lost or bad block).
        partial: bool,
        wire: u64,
    },
    Data {
        stream: u32,
        end_stream: bool,
        wire: u64,
        /// With `--capture-body`: the frame's first data bytes (padding
        /// removed), and whether some of those wanted were not copied.
        kept: Option<(Vec<u8>, bool)>,
    },
    Reset {
        stream: u32,
        code: u32,
    },
    GoAway {
        last: u32,
        code: u32,
    },
    /// SETTINGS_HEADER_TABLE_SIZE from this direction's sender: it applies
    /// to the other direction's decoder.
    TableSize(u32),
    Failure(Failure),
}

/// One HTTP/2 connection seen from one end.
#[derive(Debug)]
pub struct Connection {
    dirs: [Dir; 2],
    seq: [u64; 2],
    /// Which side sends requests (the client's direction).
    requests: Option<Side>,
    streams: HashMap<u32, Stream>,
    /// The connection was seen from its preface: header state is known.
    from_start: bool,
    /// A header block went by (a preface after it is not a start).
    blocks_seen: bool,
    /// What is kept beyond the default fields (headers, the first bytes of
    /// DATA).
    capture: std::sync::Arc<crate::capture::Capture>,
}

impl Default for Connection {
    fn default() -> Self {
        Connection::new()
    }
}

impl Connection {
    /// A connection with nothing seen yet.
    pub fn new() -> Connection {
        Connection::with_capture(Default::default())
    }

    /// A connection that keeps what `capture` asks for.
    pub fn with_capture(capture: std::sync::Arc<crate::capture::Capture>) -> Connection {
        let mut dirs = [Dir::new(), Dir::new()];
        for d in &mut dirs {
            d.body = capture.body;
        }
        Connection {
            dirs,
            seq: [0; 2],
            requests: None,
            streams: HashMap::new(),
            from_start: false,
            blocks_seen: false,
            capture,
        }
    }

    /// The regular (not pseudo) fields of a block as kept, when asked;
    /// credentials (never decoded into a value) as redacted.
    fn kept_fields(&self, fields: &[Field]) -> Vec<(String, String)> {
        if !self.capture.headers {
            return Vec::new();
        }
        fields
            .iter()
            .filter_map(|f| {
                let n = f.name.as_deref()?;
                if n.starts_with(b":") {
                    return None;
                }
                Some(match &f.value {
                    Some(v) => self.capture.header(n, v),
                    None => (
                        String::from_utf8_lossy(n).into_owned(),
                        crate::capture::REDACTED.to_string(),
                    ),
                })
            })
            .collect()
    }

    /// Streams open (bounded by [`MAX_STREAMS`]).
    pub fn open_streams(&self) -> usize {
        self.streams.len()
    }

    /// Bytes held for this connection beyond its fixed size (tests).
    pub fn held_bytes(&self) -> usize {
        self.dirs
            .iter()
            .map(|d| {
                d.hpack.table_bytes()
                    + d.payload.capacity()
                    + d.block.as_ref().map_or(0, |b| b.bytes.capacity())
            })
            .sum::<usize>()
            + self
                .streams
                .values()
                .map(|s| {
                    std::mem::size_of::<Stream>()
                        + s.bodies.iter().map(|b| b.0.capacity()).sum::<usize>()
                })
                .sum::<usize>()
    }

    /// One read or write: `len` bytes moved at stream offset `seq`, of which
    /// `captured` are the first.
    pub fn data(
        &mut self,
        at_ns: u64,
        side: Side,
        seq: u64,
        captured: &[u8],
        len: u64,
    ) -> Vec<Outcome> {
        let mut out = Vec::new();
        let i = side_index(side);
        let expected = self.seq[i];
        let lost = if self.dirs[i].started {
            seq.saturating_sub(expected)
        } else {
            0
        };
        self.seq[i] = seq.saturating_add(len);
        let captured = &captured[..captured.len().min(len as usize)];
        if !self.dirs[i].started {
            self.dirs[i].started = true;
            let preface = captured.len() >= 4
                && (captured.starts_with(PREFACE) || PREFACE.starts_with(captured));
            if preface && self.requests.is_none() && !self.blocks_seen {
                // Seen from the start (the other direction may have sent
                // its SETTINGS already, but no header block): both tables
                // are known in full.
                self.from_start = true;
                self.requests = Some(side);
                self.dirs[i].state = State::Preface(PREFACE.len());
                for d in &mut self.dirs {
                    d.hpack = Decoder::new(true);
                }
            } else if !self.from_start && !plausible_frame_header(captured) {
                // (After the preface the other side starts with its
                // SETTINGS, on a frame boundary, however it is split.)
                // Starts mid-frame (or is not HTTP/2): wait for a frame start.
                self.dirs[i].state = State::Skip;
            }
        }
        if lost > 0 {
            out.push(Outcome::Lost { bytes: lost });
        }
        let mut evs = Vec::new();
        let d = &mut self.dirs[i];
        d.now = at_ns;
        if lost > 0 {
            // (Counted as lost above either way.)
            let _ = d.gap(lost, &mut evs);
        }
        if matches!(d.state, State::Skip) {
            if plausible_frame_header(captured) {
                d.state = State::Header;
            } else {
                out.push(Outcome::Lost { bytes: len });
                return out;
            }
        }
        d.feed(captured, &mut evs);
        let rest = len - captured.len() as u64;
        if rest > 0 && !d.gap(rest, &mut evs) {
            // Not captured and not inside a payload we could skip.
            out.push(Outcome::Lost { bytes: rest });
        }
        for ev in evs {
            self.handle(side, at_ns, ev, &mut out);
        }
        out
    }

    fn handle(&mut self, side: Side, at_ns: u64, ev: Ev, out: &mut Vec<Outcome>) {
        match ev {
            Ev::Failure(f) => out.push(Outcome::ParseError {
                at_ns,
                reason: f.reason().to_string(),
            }),
            Ev::TableSize(n) => self.dirs[1 - side_index(side)].hpack.set_setting(n),
            Ev::Headers {
                stream,
                end_stream,
                push,
                fields,
                partial,
                wire,
            } => self.headers(
                side, at_ns, stream, end_stream, push, &fields, partial, wire, out,
            ),
            Ev::Data {
                stream,
                end_stream,
                wire,
                kept,
            } => {
                let Some(req_side) = self.requests else {
                    return;
                };
                let Some(s) = self.streams.get_mut(&stream) else {
                    return;
                };
                if let Some((bytes, cut)) = kept {
                    let (body, body_cut) = &mut s.bodies[usize::from(side != req_side)];
                    if !*body_cut {
                        let room = self.capture.body.saturating_sub(body.len());
                        body.extend_from_slice(&bytes[..bytes.len().min(room)]);
                        // A hole after what is kept cuts nothing.
                        *body_cut = cut && body.len() < self.capture.body;
                    }
                }
                if side == req_side {
                    s.ex.request_bytes += wire;
                    if end_stream {
                        s.request_done = true;
                    }
                } else {
                    s.ex.response_bytes += wire;
                    s.ex.end_ns = at_ns;
                    if end_stream {
                        s.response_done = true;
                    }
                }
                self.maybe_done(stream, out);
            }
            Ev::Reset { stream, code } => {
                if let Some(mut s) = self.streams.remove(&stream) {
                    s.ex.end_ns = at_ns;
                    let who = if Some(side) == self.requests {
                        "client"
                    } else {
                        "server"
                    };
                    s.ex.error = Some(format!(
                        "stream reset by the {who} ({})",
                        error_code_name(code)
                    ));
                    out.push(Outcome::Exchange(finish(s, &self.capture)));
                }
            }
            Ev::GoAway { last, code } => {
                let mut gone: Vec<u32> = self
                    .streams
                    .keys()
                    .copied()
                    .filter(|id| *id > last)
                    .collect();
                gone.sort_unstable();
                for id in gone {
                    if let Some(mut s) = self.streams.remove(&id) {
                        s.ex.end_ns = at_ns;
                        s.ex.error = Some(format!(
                            "not processed: connection going away (GOAWAY {})",
                            error_code_name(code)
                        ));
                        out.push(Outcome::Exchange(finish(s, &self.capture)));
                    }
                }
            }
        }
    }

    #[allow(clippy::too_many_arguments)] // one header block's facts, unpacked from Ev
    fn headers(
        &mut self,
        side: Side,
        at_ns: u64,
        stream: u32,
        end_stream: bool,
        push: bool,
        fields: &[Field],
        partial: bool,
        wire: u64,
        out: &mut Vec<Outcome>,
    ) {
        self.blocks_seen = true;
        let has = |n: &str| {
            fields
                .iter()
                .any(|f| f.name.as_deref() == Some(n.as_bytes()))
        };
        if push {
            // A promised stream: the server's response to it comes later on
            // that stream; keep HPACK in step, report nothing for it here.
            return;
        }
        if self.requests.is_none() {
            // Joined late: the side that opens a stream (odd id, or a block
            // with :method) sends requests; one with :status answers.
            let req = if has(":method") {
                Some(side)
            } else if has(":status") {
                Some(other(side))
            } else if stream % 2 == 1 && !self.streams.contains_key(&stream) {
                Some(side)
            } else {
                None
            };
            self.requests = req;
        }
        let Some(req_side) = self.requests else {
            return;
        };
        let unknown = partial || !self.from_start;
        if side == req_side {
            if let Some(s) = self.streams.get_mut(&stream) {
                // Request trailers.
                s.ex.request_bytes += wire;
                if end_stream {
                    s.request_done = true;
                }
                self.maybe_done(stream, out);
                return;
            }
            if self.streams.len() >= MAX_STREAMS {
                self.evict_oldest(at_ns, out);
            }
            let mut s = Stream {
                request_seen: true,
                request_done: end_stream,
                header_state_unknown: unknown,
                ..Stream::default()
            };
            s.ex.server = req_side == Side::Rx;
            s.ex.version = "HTTP/2".into();
            s.ex.start_ns = at_ns;
            s.ex.end_ns = at_ns;
            s.ex.request_bytes = wire;
            let mut trace = crate::tracectx::Collector::default();
            for f in fields {
                let (Some(n), Some(v)) = (&f.name, &f.value) else {
                    continue;
                };
                let v = String::from_utf8_lossy(v);
                match n.as_slice() {
                    b":method" => s.ex.method = v.into_owned(),
                    b":path" => s.ex.path = redact_query(&v),
                    b":authority" => s.ex.host = v.into_owned(),
                    b"host" if s.ex.host.is_empty() => s.ex.host = v.into_owned(),
                    b"content-type" if is_grpc(&v) => s.grpc = true,
                    _ => trace.header(n, f.value.as_deref().unwrap_or_default()),
                }
            }
            s.ex.trace = trace.finish();
            let kept = self.kept_fields(fields);
            if !kept.is_empty() {
                s.ex.captured_mut().request_headers = kept;
            }
            s.ex.stream = stream;
            self.streams.insert(stream, s);
            return;
        }
        // The response side: headers, or trailers after them.
        if !self.streams.contains_key(&stream) {
            if self.streams.len() >= MAX_STREAMS {
                self.evict_oldest(at_ns, out);
            }
            // A response whose request the trace did not see.
            let mut s = Stream {
                header_state_unknown: unknown,
                request_done: true,
                ..Stream::default()
            };
            s.ex.server = req_side == Side::Rx;
            s.ex.version = "HTTP/2".into();
            s.ex.start_ns = at_ns;
            s.ex.stream = stream;
            self.streams.insert(stream, s);
        }
        let kept = self.kept_fields(fields);
        let Some(s) = self.streams.get_mut(&stream) else {
            return;
        };
        s.ex.response_bytes += wire;
        // Headers, then trailers (gRPC's status): all kept, in order.
        if !kept.is_empty() {
            s.ex.captured_mut().response_headers.extend(kept);
        }
        s.ex.end_ns = at_ns;
        if unknown {
            s.header_state_unknown = true;
        }
        let mut status = None;
        for f in fields {
            let (Some(n), Some(v)) = (&f.name, &f.value) else {
                continue;
            };
            let v = String::from_utf8_lossy(v);
            match n.as_slice() {
                b":status" => status = v.parse::<u16>().ok(),
                b"content-type" if is_grpc(&v) => s.grpc = true,
                b"grpc-status" => s.grpc_status = v.parse().ok(),
                // grpc-go sends an empty one with every OK status: no message.
                b"grpc-message" if !v.is_empty() => s.grpc_message = Some(percent_decode(&v)),
                _ => {}
            }
        }
        match status {
            Some(st) if (100..200).contains(&st) => {}
            Some(st) => {
                s.ex.status = Some(st);
                s.response_headers = true;
            }
            None => {}
        }
        if end_stream {
            s.response_done = true;
        }
        self.maybe_done(stream, out);
    }

    fn maybe_done(&mut self, stream: u32, out: &mut Vec<Outcome>) {
        let done = self
            .streams
            .get(&stream)
            .is_some_and(|s| s.request_done && s.response_done);
        if done {
            if let Some(s) = self.streams.remove(&stream) {
                out.push(Outcome::Exchange(finish(s, &self.capture)));
            }
        }
    }

    fn evict_oldest(&mut self, at_ns: u64, out: &mut Vec<Outcome>) {
        let Some(id) = self
            .streams
            .iter()
            .min_by_key(|(id, s)| (s.ex.start_ns, **id))
            .map(|(id, _)| *id)
        else {
            return;
        };
        if let Some(mut s) = self.streams.remove(&id) {
            s.ex.end_ns = s.ex.end_ns.max(at_ns);
            s.ex.error = Some("too many open streams on the connection".into());
            out.push(Outcome::Exchange(finish(s, &self.capture)));
        }
    }

    /// The connection closed (or the trace ended): open streams are
    /// reported, with the time of their last frame as their end.
    pub fn close(&mut self, at_ns: u64, why: &str) -> Vec<Outcome> {
        let mut out = Vec::new();
        // A kept DATA frame still coming: what came of it counts.
        for i in 0..2 {
            if let Some(ev) = self.dirs[i].cut_kept_data() {
                self.dirs[i].state = State::Skip;
                let side = if i == 0 { Side::Tx } else { Side::Rx };
                self.handle(side, at_ns, ev, &mut out);
            }
        }
        let mut ids: Vec<u32> = self.streams.keys().copied().collect();
        ids.sort_unstable();
        for id in ids {
            if let Some(mut s) = self.streams.remove(&id) {
                let what = if !s.request_seen {
                    "request not seen"
                } else if s.response_headers {
                    "response incomplete"
                } else {
                    "no response"
                };
                s.ex.error = Some(format!("{what}: {why}"));
                out.push(Outcome::Exchange(finish(s, &self.capture)));
            }
        }
        out
    }
}

fn finish(s: Stream, capture: &crate::capture::Capture) -> Exchange {
    let mut ex = s.ex;
    let [(req, _), (resp, _)] = s.bodies;
    if !req.is_empty() {
        ex.captured_mut().request_body = Some(capture.body_text(&req));
    }
    if !resp.is_empty() {
        ex.captured_mut().response_body = Some(capture.body_text(&resp));
    }
    if s.grpc {
        let (service, method) = grpc_path(&ex.path);
        ex.rpc = Some(Box::new(RpcInfo {
            system: "grpc".into(),
            service,
            method,
            status: s.grpc_status,
            message: s.grpc_message,
        }));
    }
    if s.header_state_unknown {
        ex.truncated = true;
        ex.error = Some(match ex.error {
            Some(e) => format!("{e}; {HEADER_STATE_UNKNOWN}"),
            None => HEADER_STATE_UNKNOWN.to_string(),
        });
    }
    ex
}

/// `/pkg.Service/Method` -> (`pkg.Service`, `Method`).
fn grpc_path(path: &str) -> (String, String) {
    let p = path.split('?').next().unwrap_or("");
    let p = p.strip_prefix('/').unwrap_or(p);
    match p.split_once('/') {
        Some((s, m)) => (s.to_string(), m.to_string()),
        None => (String::new(), p.to_string()),
    }
}

fn is_grpc(content_type: &str) -> bool {
    let ct = content_type.trim().to_ascii_lowercase();
    ct == "application/grpc"
        || ct.starts_with("application/grpc+")
        || ct.starts_with("application/grpc;")
}

/// grpc-message is percent-encoded (gRPC over HTTP/2, "Responses").
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() && out.len() < MAX_GRPC_MESSAGE {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok();
            if let Some(v) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn error_code_name(code: u32) -> String {
    match code {
        0x0 => "NO_ERROR".into(),
        0x1 => "PROTOCOL_ERROR".into(),
        0x2 => "INTERNAL_ERROR".into(),
        0x3 => "FLOW_CONTROL_ERROR".into(),
        0x4 => "SETTINGS_TIMEOUT".into(),
        0x5 => "STREAM_CLOSED".into(),
        0x6 => "FRAME_SIZE_ERROR".into(),
        0x7 => "REFUSED_STREAM".into(),
        0x8 => "CANCEL".into(),
        0x9 => "COMPRESSION_ERROR".into(),
        0xa => "CONNECT_ERROR".into(),
        0xb => "ENHANCE_YOUR_CALM".into(),
        0xc => "INADEQUATE_SECURITY".into(),
        0xd => "HTTP_1_1_REQUIRED".into(),
        n => format!("error 0x{n:x}"),
    }
}

fn side_index(s: Side) -> usize {
    match s {
        Side::Tx => 0,
        Side::Rx => 1,
    }
}

fn other(s: Side) -> Side {
    match s {
        Side::Tx => Side::Rx,
        Side::Rx => Side::Tx,
    }
}

impl Dir {
    /// `n` bytes of this direction are missing here. False if they were
    /// not inside the current frame's payload (sync lost, or already lost).
    fn gap(&mut self, n: u64, evs: &mut Vec<Ev>) -> bool {
        let kept = self.payload.len();
        let body = self.body;
        match &mut self.state {
            State::Payload {
                frame,
                left,
                keep,
                broken,
            } if n <= *left => {
                *left -= n;
                // (A hole in a DATA frame after the body bytes kept of it
                // cuts nothing.)
                if *keep
                    && (frame.kind != DATA || kept < body + usize::from(frame.flags & PADDED != 0))
                {
                    *broken = true;
                }
                if *left == 0 {
                    self.end_frame(evs);
                }
                true
            }
            State::Skip => false,
            _ => {
                // A frame header is in the hole: frames (header blocks among
                // them) may be missing.
                self.lose_sync(evs);
                false
            }
        }
    }

    /// A kept DATA frame whose end will not come (a hole, the close): what
    /// was kept of it, as cut.
    fn cut_kept_data(&mut self) -> Option<Ev> {
        match self.state {
            State::Payload { frame, .. } if frame.kind == DATA && self.body > 0 => {
                let p = std::mem::take(&mut self.payload);
                Some(self.data_event(frame, &p, true))
            }
            _ => None,
        }
    }

    fn lose_sync(&mut self, evs: &mut Vec<Ev>) {
        // The frame's end is in the hole.
        evs.extend(self.cut_kept_data());
        self.state = State::Skip;
        self.hdr.clear();
        self.payload = Vec::new();
        if let Some(b) = &mut self.block {
            b.broken = true;
        }
        self.hpack.lose_state();
    }

    fn feed(&mut self, mut data: &[u8], evs: &mut Vec<Ev>) {
        while !data.is_empty() {
            match &mut self.state {
                State::Skip => return,
                State::Preface(left) => {
                    let done = PREFACE.len() - *left;
                    let n = (*left).min(data.len());
                    if data[..n] != PREFACE[done..done + n] {
                        evs.push(Ev::Failure(Failure::BadPreface));
                        self.lose_sync(evs);
                        return;
                    }
                    *left -= n;
                    data = &data[n..];
                    if *left == 0 {
                        self.state = State::Header;
                    }
                }
                State::Header => {
                    let n = (9 - self.hdr.len()).min(data.len());
                    self.hdr.extend_from_slice(&data[..n]);
                    data = &data[n..];
                    if self.hdr.len() == 9 {
                        let mut h = [0u8; 9];
                        h.copy_from_slice(&self.hdr);
                        self.hdr.clear();
                        self.start_frame(frame_header(&h), evs);
                    }
                }
                State::Payload {
                    frame,
                    left,
                    keep,
                    broken,
                } => {
                    let n = (*left).min(data.len() as u64) as usize;
                    if *keep && !*broken && frame.kind == DATA {
                        // The first bytes only; the rest goes by.
                        let cap = self.body + usize::from(frame.flags & PADDED != 0);
                        let room = cap.saturating_sub(self.payload.len());
                        self.payload.extend_from_slice(&data[..n.min(room)]);
                    } else if *keep && !*broken {
                        if self.payload.len() + n <= MAX_BLOCK {
                            self.payload.extend_from_slice(&data[..n]);
                        } else {
                            *broken = true;
                        }
                    }
                    *left -= n as u64;
                    data = &data[n..];
                    if *left == 0 {
                        self.end_frame(evs);
                    }
                }
            }
        }
    }

    fn start_frame(&mut self, frame: FrameHeader, evs: &mut Vec<Ev>) {
        if self.block.is_some() && frame.kind != CONTINUATION {
            // Only CONTINUATIONs may follow an unfinished header block.
            evs.push(Ev::Failure(Failure::BadContinuation));
            self.block = None;
            self.hpack.lose_state();
        }
        let keep = match frame.kind {
            HEADERS | PUSH_PROMISE | CONTINUATION => true,
            SETTINGS | RST_STREAM | GOAWAY => frame.len as usize <= MAX_CONTROL,
            DATA => self.body > 0,
            _ => false,
        };
        if frame.kind == DATA && self.body == 0 {
            // Its payload is skipped; its end of stream is known now.
            evs.push(Ev::Data {
                stream: frame.stream,
                end_stream: frame.flags & END_STREAM != 0,
                wire: 9 + u64::from(frame.len),
                kept: None,
            });
        }
        self.payload.clear();
        self.state = State::Payload {
            frame,
            left: u64::from(frame.len),
            keep,
            broken: false,
        };
        if frame.len == 0 {
            self.end_frame(evs);
        }
    }

    fn end_frame(&mut self, evs: &mut Vec<Ev>) {
        let State::Payload { frame, broken, .. } =
            std::mem::replace(&mut self.state, State::Header)
        else {
            return;
        };
        let p = std::mem::take(&mut self.payload);
        match frame.kind {
            // (Kept: the frame is reported at its end, with its first bytes.)
            DATA if self.body > 0 => evs.push(self.data_event(frame, &p, broken)),
            HEADERS | PUSH_PROMISE => {
                let mut body: &[u8] = &p;
                let mut bad = false;
                if !broken {
                    let mut skip = 0usize;
                    let mut pad = 0usize;
                    if frame.flags & PADDED != 0 {
                        pad = usize::from(*body.first().unwrap_or(&0));
                        skip = 1;
                    }
                    if frame.kind == HEADERS && frame.flags & PRIORITY != 0 {
                        skip += 5;
                    }
                    if frame.kind == PUSH_PROMISE {
                        skip += 4;
                    }
                    if skip + pad > body.len() {
                        bad = true;
                    } else {
                        body = &body[skip..body.len() - pad];
                    }
                }
                if bad {
                    evs.push(Ev::Failure(Failure::BadPadding));
                }
                let block = Block {
                    stream: frame.stream,
                    end_stream: frame.flags & END_STREAM != 0 && frame.kind == HEADERS,
                    push: frame.kind == PUSH_PROMISE,
                    bytes: if broken || bad {
                        Vec::new()
                    } else {
                        body.to_vec()
                    },
                    broken: broken || bad,
                    wire: 9 + u64::from(frame.len),
                };
                self.block = Some(block);
                if frame.flags & END_HEADERS != 0 {
                    self.end_block(evs);
                }
            }
            CONTINUATION => {
                let Some(b) = &mut self.block else {
                    evs.push(Ev::Failure(Failure::BadContinuation));
                    self.hpack.lose_state();
                    return;
                };
                b.wire += 9 + u64::from(frame.len);
                if broken || b.stream != frame.stream {
                    b.broken = true;
                } else if !b.broken {
                    if b.bytes.len() + p.len() > MAX_BLOCK {
                        b.broken = true;
                        b.bytes = Vec::new();
                        evs.push(Ev::Failure(Failure::BlockTooLong));
                    } else {
                        b.bytes.extend_from_slice(&p);
                    }
                }
                if frame.flags & END_HEADERS != 0 {
                    self.end_block(evs);
                }
            }
            SETTINGS if !broken && frame.flags & 1 == 0 => {
                for s in p.chunks_exact(6) {
                    if u16::from_be_bytes([s[0], s[1]]) == 1 {
                        evs.push(Ev::TableSize(u32::from_be_bytes([s[2], s[3], s[4], s[5]])));
                    }
                }
            }
            RST_STREAM if !broken && p.len() >= 4 => evs.push(Ev::Reset {
                stream: frame.stream,
                code: u32::from_be_bytes([p[0], p[1], p[2], p[3]]),
            }),
            GOAWAY if !broken && p.len() >= 8 => evs.push(Ev::GoAway {
                last: u32::from_be_bytes([p[0], p[1], p[2], p[3]]) & 0x7fff_ffff,
                code: u32::from_be_bytes([p[4], p[5], p[6], p[7]]),
            }),
            _ => {}
        }
        // Keep the buffer's allocation for the next kept payload (bounded).
        self.payload = p;
        self.payload.clear();
        if self.payload.capacity() > MAX_CONTROL {
            self.payload = Vec::new();
        }
    }

    /// A kept DATA frame: its first bytes without the pad length (and
    /// without padding, when the data ends before `kept` does).
    fn data_event(&self, frame: FrameHeader, kept: &[u8], cut: bool) -> Ev {
        let mut bytes = kept;
        let mut cut = cut;
        if frame.flags & PADDED != 0 {
            let pad = usize::from(kept.first().copied().unwrap_or(0));
            match (frame.len as usize).checked_sub(1 + pad) {
                Some(data_len) if !kept.is_empty() => {
                    bytes = &kept[1..];
                    bytes = &bytes[..bytes.len().min(data_len)];
                }
                _ => {
                    // Pad length unknown or longer than the frame.
                    bytes = &[];
                    cut = true;
                }
            }
        }
        Ev::Data {
            stream: frame.stream,
            end_stream: frame.flags & END_STREAM != 0,
            wire: 9 + u64::from(frame.len),
            kept: Some((bytes.to_vec(), cut)),
        }
    }

    fn end_block(&mut self, evs: &mut Vec<Ev>) {
        let Some(b) = self.block.take() else {
            return;
        };
        let (fields, partial) = if b.broken {
            // The block is lost: the encoder's table changed in ways we
            // cannot know.
            self.hpack.lose_state();
            (Vec::new(), true)
        } else {
            let complete_before = self.hpack.complete();
            let (fields, err) = self.hpack.decode(&b.bytes);
            if let Some(e) = err {
                evs.push(Ev::Failure(Failure::Hpack(e)));
            }
            let partial =
                err.is_some() || !complete_before || fields.iter().any(|f| f.name.is_none());
            (fields, partial)
        };
        evs.push(Ev::Headers {
            stream: b.stream,
            end_stream: b.end_stream,
            push: b.push,
            fields,
            partial,
            wire: b.wire,
        });
    }
}
