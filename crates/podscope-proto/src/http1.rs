//! One HTTP/1.x connection seen from one end: two byte streams (what the
//! task sent, what it received) with holes, turned into request/response
//! exchanges matched in order (keep-alive and pipelining).
//!
//! The input is what the kernel captured: for each read or write, its first
//! bytes and how many bytes it moved in all. Bytes that were not captured
//! (the rest of a long message, sendfile bodies, messages lost in the ring)
//! are holes. Holes inside a body with known framing cost nothing; a hole in
//! a head or in chunked framing loses sync, and the direction skips ahead to
//! the next read or write that starts like a message.

use std::collections::VecDeque;

use crate::redact::redact_query;

/// A head longer than this is reported truncated (bounds memory per connection).
const MAX_HEAD: usize = 16 * 1024;
/// Requests waiting for their responses on one connection (pipelining depth).
const MAX_PENDING: usize = 256;
/// Header fields parsed per head; a head with more is a parse error.
const MAX_HEADERS: usize = 96;
/// Header slots tried first for a response.
const FEW_HEADERS: usize = 24;
/// A chunk-size or trailer line longer than this is a framing error.
const MAX_LINE: usize = 4096;

const METHODS: &[&[u8]] = &[
    b"GET ",
    b"POST ",
    b"PUT ",
    b"HEAD ",
    b"DELETE ",
    b"PATCH ",
    b"OPTIONS ",
    b"CONNECT ",
    b"TRACE ",
];

/// Which way bytes moved, from the traced task's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The task sent them.
    Tx,
    /// The task received them.
    Rx,
}

impl Side {
    fn index(self) -> usize {
        match self {
            Side::Tx => 0,
            Side::Rx => 1,
        }
    }
    fn other(self) -> Side {
        match self {
            Side::Tx => Side::Rx,
            Side::Rx => Side::Tx,
        }
    }
}

/// One request and its response (or why there is none).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Exchange {
    /// The task answered the request (else it sent it).
    pub server: bool,
    /// Request method; empty if the request was not seen.
    pub method: String,
    /// Request target with query values redacted.
    pub path: String,
    /// `HTTP/1.1` or `HTTP/1.0`.
    pub version: String,
    /// The HTTP/2 stream's id (the same at both ends of the connection);
    /// 0 for HTTP/1.x.
    pub stream: u32,
    /// The Host header.
    pub host: String,
    /// Final response status.
    pub status: Option<u16>,
    /// Time of the read or write that carried the request's first byte.
    pub start_ns: u64,
    /// Time of the one that carried the response's last byte.
    pub end_ns: u64,
    /// Request bytes on the wire.
    pub request_bytes: u64,
    /// Response bytes on the wire, interim (1xx) responses included.
    pub response_bytes: u64,
    /// A head was not captured whole.
    pub truncated: bool,
    /// Why the exchange is incomplete.
    pub error: Option<String>,
    /// RPC details (gRPC over HTTP/2); boxed, as most exchanges have none.
    pub rpc: Option<Box<podscope_model::RpcInfo>>,
    /// The request's trace context (or that it had an invalid one).
    pub trace: crate::tracectx::Pickup,
    /// Headers and bodies kept (`--capture-headers`, `--capture-body`);
    /// boxed, as most exchanges have none.
    pub captured: Option<Box<crate::capture::Captured>>,
}

impl Exchange {
    /// What is kept of headers and bodies, made when first needed.
    pub fn captured_mut(&mut self) -> &mut crate::capture::Captured {
        self.captured.get_or_insert_with(Default::default)
    }
}

/// What feeding a connection produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A finished (or abandoned) exchange.
    Exchange(Exchange),
    /// Bytes that are not HTTP/1.x where a message should start; the
    /// direction skips to the next message start.
    ParseError {
        /// When.
        at_ns: u64,
        /// What was wrong.
        reason: String,
    },
    /// Bytes missing from a stream (messages lost between kernel and us).
    Lost {
        /// How many.
        bytes: u64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Request,
    Response,
}

#[derive(Debug, Clone, Default)]
struct Head {
    method: String,
    target: String,
    version: String,
    host: String,
    status: u16,
    truncated: bool,
    /// When the message's first byte was read or written.
    began: u64,
    /// Requests: the trace-context headers.
    trace: crate::tracectx::Pickup,
    /// With `--capture-headers`.
    headers: Vec<(String, String)>,
}

#[derive(Debug)]
enum Chunk {
    Size(Vec<u8>),
    Data(u64),
    DataEnd,
    Trailer(Vec<u8>),
}

#[derive(Debug)]
enum Body {
    Length(u64),
    Chunked(Chunk),
    UntilClose,
}

#[derive(Debug)]
enum State {
    Idle,
    Head(Vec<u8>),
    Body(Body),
    /// Out of sync: wait for a read/write that starts like a message.
    Skip,
    /// A hole covered the end of a chunk and the framing after it. Taken to
    /// have ended the message (a client that writes the rest of a body in
    /// one call); if the next call continues the chunks instead, they are
    /// followed without being counted again.
    AfterChunkHole,
    /// The connection switched protocols (101, CONNECT): not HTTP/1 any more.
    Done,
}

#[derive(Debug)]
enum DirEvent {
    Start(Head),
    End {
        bytes: u64,
        truncated: bool,
        /// With `--capture-body`: the body's first bytes, redacted.
        body: Option<String>,
    },
    Error(String),
}

/// What the response parser needs to know about the request it answers.
#[derive(Debug, Clone, Copy)]
struct Expect {
    head: bool,
    connect: bool,
}

/// One direction's message parser.
#[derive(Debug)]
struct Dir {
    kind: Kind,
    state: State,
    /// Bytes of the current message so far.
    bytes: u64,
    truncated: bool,
    /// Responses only: the requests still to be answered, in order.
    expect: VecDeque<Expect>,
    /// Responses only: the current one switched protocols.
    switching: bool,
    /// Following chunks of a message already reported ended.
    detached: bool,
    /// When the current message began.
    began: u64,
    /// The time of the read or write being fed.
    now: u64,
    /// What is kept beyond the default fields.
    capture: std::sync::Arc<crate::capture::Capture>,
    /// The current body's first bytes (`capture.body` at most).
    body: Vec<u8>,
    /// Bytes of the body were not captured: nothing more is kept.
    body_cut: bool,
}

fn starts_message(kind: Kind, data: &[u8]) -> bool {
    match kind {
        Kind::Request => METHODS.iter().any(|m| {
            let n = m.len().min(data.len());
            n > 0 && data[..n] == m[..n] && (n == m.len() || n == data.len())
        }),
        Kind::Response => {
            let m = b"HTTP/1.";
            let n = m.len().min(data.len());
            n > 0 && data[..n] == m[..n]
        }
    }
}

fn header_value<'a>(headers: &'a [httparse::Header<'a>], name: &str) -> Option<&'a [u8]> {
    headers
        .iter()
        .rev()
        .find(|h| h.name.eq_ignore_ascii_case(name))
        .map(|h| h.value)
}

fn trace_context(headers: &[httparse::Header]) -> crate::tracectx::Pickup {
    let mut c = crate::tracectx::Collector::default();
    for h in headers {
        c.header(h.name.as_bytes(), h.value);
    }
    c.finish()
}

fn is_chunked(headers: &[httparse::Header]) -> bool {
    // The last transfer coding decides (RFC 9112 6.1).
    headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("transfer-encoding"))
        .flat_map(|h| h.value.split(|b| *b == b','))
        .next_back()
        .is_some_and(|c| c.trim_ascii().eq_ignore_ascii_case(b"chunked"))
}

fn content_length(headers: &[httparse::Header]) -> Option<u64> {
    let v = header_value(headers, "content-length")?;
    std::str::from_utf8(v).ok()?.trim().parse().ok()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The request or status line of a head that was not captured whole.
fn first_line(kind: Kind, buf: &[u8]) -> Head {
    let line = buf.split(|b| *b == b'\n').next().unwrap_or(&[]);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let mut parts = line.splitn(3, |b| *b == b' ');
    let (a, b, c) = (
        parts.next().unwrap_or(&[]),
        parts.next().unwrap_or(&[]),
        parts.next().unwrap_or(&[]),
    );
    let mut head = Head {
        truncated: true,
        ..Head::default()
    };
    match kind {
        Kind::Request => {
            head.method = text(a);
            head.target = text(b);
            head.version = text(c);
        }
        Kind::Response => {
            head.version = text(a);
            head.status = std::str::from_utf8(b)
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
        }
    }
    head
}

impl Dir {
    fn new(kind: Kind, capture: std::sync::Arc<crate::capture::Capture>) -> Dir {
        Dir {
            kind,
            state: State::Idle,
            bytes: 0,
            truncated: false,
            expect: VecDeque::new(),
            switching: false,
            detached: false,
            began: 0,
            now: 0,
            capture,
            body: Vec::new(),
            body_cut: false,
        }
    }

    /// Body bytes as they go by: the first `capture.body` are kept.
    fn keep(&mut self, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        let room = self.capture.body.saturating_sub(self.body.len());
        if room > 0 && !self.body_cut {
            self.body.extend_from_slice(&data[..data.len().min(room)]);
        }
    }

    /// Body bytes moved but not captured: what was kept ends there.
    fn body_hole(&mut self) {
        self.body_cut = true;
    }

    /// The headers as kept, when asked.
    fn kept_headers(&self, headers: &[httparse::Header]) -> Vec<(String, String)> {
        if !self.capture.headers {
            return Vec::new();
        }
        headers
            .iter()
            .map(|h| self.capture.header(h.name.as_bytes(), h.value))
            .collect()
    }

    /// Parses a complete head: its length, fields and the body framing.
    fn parse_head(&mut self, buf: &[u8]) -> Result<Option<(usize, Head, Option<Body>)>, String> {
        match self.kind {
            Kind::Request => {
                // Uninitialised header slots: no 3 KiB memset per parse.
                let mut storage =
                    [const { std::mem::MaybeUninit::<httparse::Header>::uninit() }; MAX_HEADERS];
                let mut req = httparse::Request::new(&mut []);
                match req.parse_with_uninit_headers(buf, &mut storage) {
                    Ok(httparse::Status::Complete(n)) => {
                        let head = Head {
                            method: req.method.unwrap_or("").to_string(),
                            target: req.path.unwrap_or("").to_string(),
                            version: format!("HTTP/1.{}", req.version.unwrap_or(1)),
                            host: header_value(req.headers, "host")
                                .map(text)
                                .unwrap_or_default(),
                            status: 0,
                            truncated: false,
                            began: self.began,
                            trace: trace_context(req.headers),
                            headers: self.kept_headers(req.headers),
                        };
                        let body = if is_chunked(req.headers) {
                            Some(Body::Chunked(Chunk::Size(Vec::new())))
                        } else {
                            match content_length(req.headers) {
                                Some(0) | None => None,
                                Some(n) => Some(Body::Length(n)),
                            }
                        };
                        self.switching = false;
                        Ok(Some((n, head, body)))
                    }
                    Ok(httparse::Status::Partial) => Ok(None),
                    Err(httparse::Error::TooManyHeaders) => Err("too many headers".into()),
                    Err(e) => Err(format!("malformed request head ({e})")),
                }
            }
            Kind::Response => {
                // Most responses have few headers: a small array first (no
                // uninitialised variant for responses in httparse), the
                // full one only when it is too small.
                let mut small = [httparse::EMPTY_HEADER; FEW_HEADERS];
                match self.parse_response(buf, &mut small) {
                    Err(httparse::Error::TooManyHeaders) => {
                        let mut storage = [httparse::EMPTY_HEADER; MAX_HEADERS];
                        self.parse_response(buf, &mut storage)
                    }
                    r => r,
                }
                .map_err(|e| match e {
                    httparse::Error::TooManyHeaders => "too many headers".to_string(),
                    e => format!("malformed response head ({e})"),
                })
            }
        }
    }

    fn parse_response<'b>(
        &mut self,
        buf: &'b [u8],
        storage: &mut [httparse::Header<'b>],
    ) -> Result<Option<(usize, Head, Option<Body>)>, httparse::Error> {
        {
            {
                let mut resp = httparse::Response::new(storage);
                match resp.parse(buf) {
                    Ok(httparse::Status::Complete(n)) => {
                        let status = resp.code.unwrap_or(0);
                        let head = Head {
                            version: format!("HTTP/1.{}", resp.version.unwrap_or(1)),
                            status,
                            began: self.began,
                            headers: self.kept_headers(resp.headers),
                            ..Head::default()
                        };
                        let interim = (100..200).contains(&status) && status != 101;
                        let expect = if interim {
                            self.expect.front().copied()
                        } else {
                            self.expect.pop_front()
                        };
                        let expect = expect.unwrap_or(Expect {
                            head: false,
                            connect: false,
                        });
                        self.switching =
                            status == 101 || (expect.connect && (200..300).contains(&status));
                        let body = if (100..200).contains(&status)
                            || status == 204
                            || status == 304
                            || expect.head
                            || self.switching
                        {
                            None
                        } else if is_chunked(resp.headers) {
                            Some(Body::Chunked(Chunk::Size(Vec::new())))
                        } else {
                            match content_length(resp.headers) {
                                Some(0) => None,
                                Some(n) => Some(Body::Length(n)),
                                None => Some(Body::UntilClose),
                            }
                        };
                        Ok(Some((n, head, body)))
                    }
                    Ok(httparse::Status::Partial) => Ok(None),
                    Err(e) => Err(e),
                }
            }
        }
    }

    fn end(&mut self, out: &mut Vec<DirEvent>) {
        let body = std::mem::take(&mut self.body);
        // A body none of whose bytes were copied (sent with sendfile, or
        // past the capture) has nothing to show: absent, not empty.
        let body = (!body.is_empty()).then(|| self.capture.body_text(&body));
        self.body_cut = false;
        if !std::mem::take(&mut self.detached) {
            out.push(DirEvent::End {
                bytes: self.bytes,
                truncated: self.truncated,
                body,
            });
        }
        self.bytes = 0;
        self.truncated = false;
        self.state = if self.switching {
            State::Done
        } else {
            State::Idle
        };
    }

    /// A head that cannot be completed: report what its first line says.
    fn truncated_head(&mut self, buf: &[u8], out: &mut Vec<DirEvent>) {
        let mut head = first_line(self.kind, buf);
        head.began = self.began;
        if self.kind == Kind::Response && !(100..200).contains(&head.status) {
            self.expect.pop_front();
        }
        self.truncated = true;
        out.push(DirEvent::Start(head));
        self.end(out);
        if !matches!(self.state, State::Done) {
            self.state = State::Skip;
        }
    }

    /// The captured bytes of one read or write (a message boundary may start here).
    fn feed(&mut self, data: &[u8], out: &mut Vec<DirEvent>) {
        match self.state {
            State::Done => return,
            State::Skip | State::AfterChunkHole if starts_message(self.kind, data) => {
                self.state = State::Idle
            }
            State::AfterChunkHole if data.first().is_some_and(u8::is_ascii_hexdigit) => {
                self.detached = true;
                self.state = State::Body(Body::Chunked(Chunk::Size(Vec::new())));
            }
            State::Skip | State::AfterChunkHole => {
                self.state = State::Skip;
                return;
            }
            _ => {}
        }
        let mut owned: Vec<u8>;
        let mut input: &[u8] = data;
        while !input.is_empty() {
            match std::mem::replace(&mut self.state, State::Idle) {
                State::Done => {
                    self.state = State::Done;
                    return;
                }
                State::Skip | State::AfterChunkHole => {
                    self.state = State::Skip;
                    return;
                }
                State::Idle => {
                    // Empty lines between messages are allowed (RFC 9112 2.2).
                    let n = input
                        .iter()
                        .take_while(|b| **b == b'\r' || **b == b'\n')
                        .count();
                    input = &input[n..];
                    if input.is_empty() {
                        break;
                    }
                    if !starts_message(self.kind, input) {
                        out.push(DirEvent::Error(match self.kind {
                            Kind::Request => "bytes that do not start an HTTP/1.x request".into(),
                            Kind::Response => "bytes that do not start an HTTP/1.x response".into(),
                        }));
                        self.state = State::Skip;
                        return;
                    }
                    self.bytes = 0;
                    self.truncated = false;
                    self.began = self.now;
                    self.state = State::Head(Vec::new());
                }
                State::Head(mut buf) => {
                    let before = buf.len();
                    let take = input.len().min(MAX_HEAD - before);
                    // A head that starts in this message is parsed where it
                    // is; only one that spans messages is copied together.
                    let parsed = if before == 0 {
                        self.parse_head(&input[..take])
                    } else {
                        buf.extend_from_slice(&input[..take]);
                        self.parse_head(&buf)
                    };
                    if before == 0 && !matches!(parsed, Ok(Some(_))) {
                        buf.extend_from_slice(&input[..take]);
                    }
                    match parsed {
                        Ok(Some((len, head, body))) => {
                            // The previous attempt was partial, so the head ends in the new bytes.
                            let used = len.saturating_sub(before).min(input.len());
                            input = &input[used..];
                            self.bytes += len as u64;
                            out.push(DirEvent::Start(head));
                            match body {
                                None => self.end(out),
                                Some(b) => self.state = State::Body(b),
                            }
                        }
                        Ok(None) if buf.len() >= MAX_HEAD => {
                            self.bytes += buf.len() as u64;
                            self.truncated_head(&buf, out);
                            return;
                        }
                        Ok(None) => {
                            self.state = State::Head(buf);
                            return;
                        }
                        Err(reason) => {
                            out.push(DirEvent::Error(reason));
                            self.state = State::Skip;
                            return;
                        }
                    }
                }
                State::Body(Body::UntilClose) => {
                    self.bytes += input.len() as u64;
                    self.keep(input);
                    self.state = State::Body(Body::UntilClose);
                    return;
                }
                State::Body(Body::Length(left)) => {
                    let n = left.min(input.len() as u64);
                    self.bytes += n;
                    self.keep(&input[..n as usize]);
                    input = &input[n as usize..];
                    if left == n {
                        self.end(out);
                    } else {
                        self.state = State::Body(Body::Length(left - n));
                    }
                }
                State::Body(Body::Chunked(chunk)) => match self.chunked(chunk, input, out) {
                    Ok(rest) => {
                        owned = rest.to_vec();
                        input = &owned;
                    }
                    Err(reason) => {
                        out.push(DirEvent::Error(reason));
                        self.truncated = true;
                        self.end(out);
                        self.state = State::Skip;
                        return;
                    }
                },
            }
        }
    }

    /// Consumes chunked framing; returns the bytes after the message if it ended.
    fn chunked<'a>(
        &mut self,
        mut chunk: Chunk,
        mut input: &'a [u8],
        out: &mut Vec<DirEvent>,
    ) -> Result<&'a [u8], String> {
        while !input.is_empty() {
            match chunk {
                Chunk::Size(mut line) => {
                    let (part, done) = match input.iter().position(|b| *b == b'\n') {
                        Some(i) => (&input[..=i], true),
                        None => (input, false),
                    };
                    if line.len() + part.len() > MAX_LINE {
                        return Err("chunk-size line too long".into());
                    }
                    line.extend_from_slice(part);
                    self.bytes += part.len() as u64;
                    input = &input[part.len()..];
                    if !done {
                        chunk = Chunk::Size(line);
                        continue;
                    }
                    let digits = line.split(|b| *b == b';').next().unwrap_or(&[]);
                    let digits = std::str::from_utf8(digits)
                        .map_err(|_| "chunk size is not text".to_string())?
                        .trim();
                    let size = u64::from_str_radix(digits, 16)
                        .map_err(|_| format!("bad chunk size {digits:?}"))?;
                    chunk = if size == 0 {
                        Chunk::Trailer(Vec::new())
                    } else {
                        Chunk::Data(size)
                    };
                }
                Chunk::Data(left) => {
                    let n = left.min(input.len() as u64);
                    self.bytes += n;
                    self.keep(&input[..n as usize]);
                    input = &input[n as usize..];
                    chunk = if n == left {
                        Chunk::DataEnd
                    } else {
                        Chunk::Data(left - n)
                    };
                }
                Chunk::DataEnd => {
                    let b = input[0];
                    input = &input[1..];
                    self.bytes += 1;
                    chunk = match b {
                        b'\r' => Chunk::DataEnd,
                        b'\n' => Chunk::Size(Vec::new()),
                        _ => return Err("chunk data not followed by CRLF".into()),
                    };
                }
                Chunk::Trailer(mut line) => {
                    let (part, done) = match input.iter().position(|b| *b == b'\n') {
                        Some(i) => (&input[..=i], true),
                        None => (input, false),
                    };
                    if line.len() + part.len() > MAX_LINE {
                        return Err("trailer line too long".into());
                    }
                    line.extend_from_slice(part);
                    self.bytes += part.len() as u64;
                    input = &input[part.len()..];
                    if !done {
                        chunk = Chunk::Trailer(line);
                        continue;
                    }
                    if line == b"\r\n" || line == b"\n" {
                        self.end(out);
                        return Ok(input);
                    }
                    chunk = Chunk::Trailer(Vec::new());
                }
            }
        }
        self.state = State::Body(Body::Chunked(chunk));
        Ok(input)
    }

    /// `n` bytes that were moved but not captured.
    fn gap(&mut self, n: u64, out: &mut Vec<DirEvent>) {
        if n == 0 {
            return;
        }
        if matches!(self.state, State::Body(_)) {
            self.body_hole();
        }
        match std::mem::replace(&mut self.state, State::Skip) {
            State::Done => self.state = State::Done,
            State::Skip | State::Idle | State::AfterChunkHole => {}
            State::Head(buf) => {
                self.bytes += buf.len() as u64 + n;
                self.truncated_head(&buf, out);
            }
            State::Body(Body::UntilClose) => {
                self.bytes += n;
                self.state = State::Body(Body::UntilClose);
            }
            State::Body(Body::Length(left)) => {
                self.bytes += n.min(left);
                if n >= left {
                    self.end(out);
                    if n > left && !matches!(self.state, State::Done) {
                        self.state = State::Skip;
                    }
                } else {
                    self.state = State::Body(Body::Length(left - n));
                }
            }
            State::Body(Body::Chunked(Chunk::Data(left))) if n < left => {
                self.bytes += n;
                self.state = State::Body(Body::Chunked(Chunk::Data(left - n)));
            }
            // A hole that ends the chunk's data and at most its CRLF: a
            // client writing one chunk per call, captured only in part.
            State::Body(Body::Chunked(Chunk::Data(left))) if n <= left + 2 => {
                self.bytes += n;
                self.state = State::Body(Body::Chunked(if n == left + 2 {
                    Chunk::Size(Vec::new())
                } else {
                    Chunk::DataEnd
                }));
            }
            State::Body(Body::Chunked(_)) => {
                self.bytes += n;
                self.end(out);
                self.state = State::AfterChunkHole;
            }
        }
    }

    /// The connection closed: a body that runs until close ends here.
    fn close(&mut self, out: &mut Vec<DirEvent>) {
        match std::mem::replace(&mut self.state, State::Done) {
            State::Body(Body::UntilClose) => self.end(out),
            State::Body(_) => {
                self.truncated = true;
                self.end(out);
            }
            State::Head(buf) => self.truncated_head(&buf, out),
            _ => {}
        }
        self.state = State::Done;
    }
}

#[derive(Debug)]
struct Pending {
    id: u64,
    ex: Exchange,
    /// The response in progress is an interim (1xx) one.
    interim: bool,
}

/// The parser state of one connection.
#[derive(Debug)]
pub struct Connection {
    /// The direction requests flow in, once known.
    requests: Option<Side>,
    req: Dir,
    resp: Dir,
    pending: VecDeque<Pending>,
    next_id: u64,
    /// The request whose bytes the request parser is reading.
    current: Option<u64>,
    /// Expected stream offset per direction.
    seq: [u64; 2],
    /// When each direction last moved bytes: a body that runs until close
    /// ended with its last bytes, not when the socket was closed (a server
    /// may linger for seconds before closing).
    last_ns: [u64; 2],
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
        Connection {
            requests: None,
            req: Dir::new(Kind::Request, capture.clone()),
            resp: Dir::new(Kind::Response, capture),
            pending: VecDeque::new(),
            next_id: 0,
            current: None,
            seq: [0; 2],
            last_ns: [0; 2],
        }
    }

    /// Requests not yet answered (bounded by the pipelining depth).
    pub fn pending(&self) -> usize {
        self.pending.len()
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
        let expected = self.seq[side.index()];
        let lost = seq.saturating_sub(expected);
        self.seq[side.index()] = seq.saturating_add(len);
        self.last_ns[side.index()] = at_ns;
        let requests = match self.requests {
            Some(r) => r,
            None => {
                if starts_message(Kind::Request, captured) && captured.len() >= 4 {
                    self.requests = Some(side);
                    side
                } else if captured.starts_with(b"HTTP/1.") {
                    self.requests = Some(side.other());
                    side.other()
                } else {
                    // Not yet recognisable (the kernel sniffs the first message).
                    if len > 0 {
                        out.push(Outcome::Lost { bytes: len });
                    }
                    return out;
                }
            }
        };
        if lost > 0 {
            out.push(Outcome::Lost { bytes: lost });
        }
        let captured = &captured[..captured.len().min(len as usize)];
        let mut evs = Vec::new();
        let is_req = side == requests;
        let dir = if is_req {
            &mut self.req
        } else {
            &mut self.resp
        };
        dir.now = at_ns;
        dir.gap(lost, &mut evs);
        dir.feed(captured, &mut evs);
        dir.gap(len - captured.len() as u64, &mut evs);
        self.handle(is_req, at_ns, evs, &mut out);
        out
    }

    fn handle(&mut self, is_req: bool, at_ns: u64, evs: Vec<DirEvent>, out: &mut Vec<Outcome>) {
        let server = self.requests == Some(Side::Rx);
        for ev in evs {
            match (is_req, ev) {
                (_, DirEvent::Error(reason)) => out.push(Outcome::ParseError { at_ns, reason }),
                (true, DirEvent::Start(head)) => {
                    if self.pending.len() >= MAX_PENDING {
                        let mut p = self.pending.pop_front().unwrap();
                        p.ex.error = Some("too many requests without a response".into());
                        p.ex.end_ns = at_ns;
                        self.resp.expect.pop_front();
                        out.push(Outcome::Exchange(p.ex));
                    }
                    self.resp.expect.push_back(Expect {
                        head: head.method == "HEAD",
                        connect: head.method == "CONNECT",
                    });
                    let id = self.next_id;
                    self.next_id += 1;
                    self.current = Some(id);
                    self.pending.push_back(Pending {
                        id,
                        ex: Exchange {
                            server,
                            method: head.method,
                            path: redact_query(&head.target),
                            version: head.version,
                            host: head.host,
                            start_ns: head.began,
                            truncated: head.truncated,
                            trace: head.trace,
                            captured: (!head.headers.is_empty()).then(|| {
                                Box::new(crate::capture::Captured {
                                    request_headers: head.headers,
                                    ..Default::default()
                                })
                            }),
                            ..Exchange::default()
                        },
                        interim: false,
                    });
                }
                (
                    true,
                    DirEvent::End {
                        bytes,
                        truncated,
                        body,
                    },
                ) => {
                    if let Some(p) = self.pending.iter_mut().find(|p| Some(p.id) == self.current) {
                        p.ex.request_bytes += bytes;
                        p.ex.truncated |= truncated;
                        if body.is_some() {
                            p.ex.captured_mut().request_body = body;
                        }
                    }
                    self.current = None;
                }
                (false, DirEvent::Start(head)) => {
                    if self.pending.is_empty() {
                        let id = self.next_id;
                        self.next_id += 1;
                        self.pending.push_back(Pending {
                            id,
                            ex: Exchange {
                                server,
                                version: head.version.clone(),
                                start_ns: at_ns,
                                error: Some(
                                    "response to a request not seen (sent before the trace \
                                     started, or lost)"
                                        .into(),
                                ),
                                ..Exchange::default()
                            },
                            interim: false,
                        });
                    }
                    let p = self.pending.front_mut().unwrap();
                    p.interim = (100..200).contains(&head.status) && head.status != 101;
                    if !p.interim {
                        p.ex.status = Some(head.status);
                        if !head.headers.is_empty() {
                            p.ex.captured_mut().response_headers = head.headers;
                        }
                    }
                    p.ex.truncated |= head.truncated;
                }
                (
                    false,
                    DirEvent::End {
                        bytes,
                        truncated,
                        body,
                    },
                ) => {
                    let Some(p) = self.pending.front_mut() else {
                        continue;
                    };
                    p.ex.response_bytes += bytes;
                    p.ex.truncated |= truncated;
                    if !p.interim && body.is_some() {
                        p.ex.captured_mut().response_body = body;
                    }
                    if p.interim {
                        p.interim = false;
                        continue;
                    }
                    let mut p = self.pending.pop_front().unwrap();
                    p.ex.end_ns = at_ns;
                    if self.current == Some(p.id) {
                        // Answered before its body was read (an early error).
                        self.current = None;
                    }
                    out.push(Outcome::Exchange(p.ex));
                }
            }
        }
        if self.resp.switching && matches!(self.resp.state, State::Done) {
            // 101 or a CONNECT tunnel: no more HTTP/1 on this connection.
            self.req.state = State::Done;
        }
    }

    /// The connection closed (or the trace ends: `why` says which).
    pub fn close(&mut self, at_ns: u64, why: &str) -> Vec<Outcome> {
        let mut out = Vec::new();
        let mut evs = Vec::new();
        self.req.close(&mut evs);
        self.handle(true, at_ns, evs, &mut out);
        let mut evs = Vec::new();
        self.resp.close(&mut evs);
        let last = self.requests.map_or(0, |r| self.last_ns[r.other().index()]);
        let resp_end = if last > 0 { last.min(at_ns) } else { at_ns };
        self.handle(false, resp_end, evs, &mut out);
        for mut p in self.pending.drain(..) {
            p.ex.end_ns = at_ns;
            p.ex.error = Some(if p.ex.status.is_some() {
                format!("response cut short: {why}")
            } else {
                format!("no response: {why}")
            });
            out.push(Outcome::Exchange(p.ex));
        }
        out
    }
}
