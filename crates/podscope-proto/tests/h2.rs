//! The HTTP/2 connection parser and HPACK decoder on byte streams as the
//! kernel delivers them: the preface, interleaved streams, CONTINUATION,
//! padding and priority, RST_STREAM, GOAWAY, SETTINGS table sizes, gRPC
//! trailers, a connection joined late, holes, and arbitrary input.

use podscope_proto::h2::{Connection, HEADER_STATE_UNKNOWN, PREFACE};
use podscope_proto::hpack::Decoder;
use podscope_proto::{Exchange, Outcome, Side};

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

const DATA: u8 = 0;
const HEADERS: u8 = 1;
const RST: u8 = 3;
const SETTINGS: u8 = 4;
const GOAWAY: u8 = 7;
const CONT: u8 = 9;
const ES: u8 = 1;
const EH: u8 = 4;

/// One HPACK encoder per direction (loona-hpack's: no Huffman, but it
/// indexes into the dynamic table like real encoders do).
struct Enc(loona_hpack::Encoder<'static>);

impl Enc {
    fn new() -> Enc {
        Enc(loona_hpack::Encoder::new())
    }
    fn block(&mut self, fields: &[(&str, &str)]) -> Vec<u8> {
        self.0
            .encode(fields.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())))
    }
}

struct Feed {
    conn: Connection,
    seq: [u64; 2],
    t: u64,
    out: Vec<Outcome>,
}

impl Feed {
    fn new() -> Feed {
        Feed {
            conn: Connection::new(),
            seq: [0; 2],
            t: 0,
            out: Vec::new(),
        }
    }
    fn partial(&mut self, side: Side, data: &[u8], len: u64) {
        let i = if side == Side::Tx { 0 } else { 1 };
        self.t += 1000;
        let o = self.conn.data(self.t, side, self.seq[i], data, len);
        self.seq[i] += len;
        self.out.extend(o);
    }
    fn msg(&mut self, side: Side, data: &[u8]) {
        self.partial(side, data, data.len() as u64);
    }
    fn exchanges(&self) -> Vec<Exchange> {
        self.out
            .iter()
            .filter_map(|o| match o {
                Outcome::Exchange(x) => Some(x.clone()),
                _ => None,
            })
            .collect()
    }
    fn summary(&self) -> Vec<(String, String, Option<u16>)> {
        self.exchanges()
            .into_iter()
            .map(|x| (x.method, x.path, x.status))
            .collect()
    }
    fn errors(&self) -> Vec<String> {
        self.out
            .iter()
            .filter_map(|o| match o {
                Outcome::ParseError { reason, .. } => Some(reason.clone()),
                _ => None,
            })
            .collect()
    }
}

fn s(m: &str, p: &str, st: u16) -> (String, String, Option<u16>) {
    (m.to_string(), p.to_string(), Some(st))
}

fn get(enc: &mut Enc, path: &str) -> Vec<u8> {
    enc.block(&[
        (":method", "GET"),
        (":scheme", "http"),
        (":path", path),
        (":authority", "web:8080"),
        ("user-agent", "test"),
        ("authorization", "Bearer secret-token"),
    ])
}

#[test]
fn server_sees_preface_streams_and_responses_as_a_server() {
    let (mut c, mut sv) = (Enc::new(), Enc::new());
    let mut f = Feed::new();
    // The server (this task) reads the preface, SETTINGS and two requests
    // in one read; writes its SETTINGS and the responses.
    let mut m = PREFACE.to_vec();
    m.extend(frame(SETTINGS, 0, 0, &[0, 3, 0, 0, 0, 100]));
    m.extend(frame(HEADERS, ES | EH, 1, &get(&mut c, "/a?user=bob")));
    m.extend(frame(HEADERS, ES | EH, 3, &get(&mut c, "/b")));
    f.msg(Side::Rx, &m);
    f.msg(Side::Tx, &frame(SETTINGS, 0, 0, &[]));
    // Stream 3 answered first; stream 1's body in two DATA frames.
    let mut m = frame(HEADERS, EH | ES, 3, &sv.block(&[(":status", "404")]));
    m.extend(frame(HEADERS, EH, 1, &sv.block(&[(":status", "200")])));
    m.extend(frame(DATA, 0, 1, b"hello "));
    f.msg(Side::Tx, &m);
    f.msg(Side::Tx, &frame(DATA, ES, 1, b"world"));
    assert_eq!(
        f.summary(),
        [s("GET", "/b", 404), s("GET", "/a?user=?", 200)]
    );
    let x = &f.exchanges()[1];
    assert!(x.server);
    assert_eq!(x.version, "HTTP/2");
    assert_eq!(x.host, "web:8080");
    assert_eq!(x.error, None);
    assert_eq!(x.response_bytes, (9 + 1) + (9 + 6) + (9 + 5));
    assert!(x.request_bytes > 9);
    assert_eq!(x.end_ns - x.start_ns, 3000);
    assert!(f.errors().is_empty());
    assert!(!format!("{:?}", f.out).contains("secret"));
}

#[test]
fn client_split_reads_continuation_padding_and_priority() {
    let (mut c, mut sv) = (Enc::new(), Enc::new());
    let mut f = Feed::new();
    let mut m = PREFACE.to_vec();
    m.extend(frame(SETTINGS, 0, 0, &[]));
    // HEADERS with PRIORITY and padding, its block continued in two frames.
    let block = c.block(&[
        (":method", "POST"),
        (":scheme", "http"),
        (":path", "/upload?k=v"),
        (":authority", "h"),
    ]);
    let (a, b) = block.split_at(3);
    let mut p = vec![4u8]; // pad length
    p.extend([0x80, 0, 0, 1, 16]); // exclusive dep on 1, weight
    p.extend_from_slice(a);
    p.extend([0; 4]);
    m.extend(frame(HEADERS, 0x08 | 0x20, 1, &p));
    m.extend(frame(CONT, 0, 1, &b[..1]));
    m.extend(frame(CONT, EH, 1, &b[1..]));
    // A padded DATA frame ends the request.
    m.extend(frame(DATA, ES | 0x08, 1, &[2, b'x', b'y', 0, 0]));
    f.msg(Side::Tx, &m);
    // The response, read a few bytes at a time.
    let mut r = frame(SETTINGS, 0, 0, &[]);
    r.extend(frame(HEADERS, EH, 1, &sv.block(&[(":status", "201")])));
    r.extend(frame(DATA, ES, 1, b"done"));
    for chunk in r.chunks(5) {
        f.msg(Side::Rx, chunk);
    }
    assert_eq!(f.summary(), [s("POST", "/upload?k=?", 201)]);
    assert!(!f.exchanges()[0].server);
    assert!(f.errors().is_empty(), "{:?}", f.errors());
}

#[test]
fn head_reset_and_goaway_end_streams() {
    let (mut c, mut sv) = (Enc::new(), Enc::new());
    let mut f = Feed::new();
    let mut m = PREFACE.to_vec();
    m.extend(frame(SETTINGS, 0, 0, &[]));
    m.extend(frame(
        HEADERS,
        ES | EH,
        1,
        &c.block(&[(":method", "HEAD"), (":path", "/h")]),
    ));
    m.extend(frame(
        HEADERS,
        ES | EH,
        3,
        &c.block(&[(":method", "GET"), (":path", "/r")]),
    ));
    m.extend(frame(
        HEADERS,
        ES | EH,
        5,
        &c.block(&[(":method", "GET"), (":path", "/g")]),
    ));
    f.msg(Side::Rx, &m);
    let mut r = frame(
        HEADERS,
        ES | EH,
        1,
        &sv.block(&[(":status", "200"), ("content-length", "10")]),
    );
    r.extend(frame(RST, 0, 3, &8u32.to_be_bytes()));
    let mut ga = 3u32.to_be_bytes().to_vec();
    ga.extend(0u32.to_be_bytes());
    r.extend(frame(GOAWAY, 0, 0, &ga));
    f.msg(Side::Tx, &r);
    let x = f.exchanges();
    assert_eq!(x.len(), 3);
    assert_eq!((x[0].method.as_str(), x[0].status), ("HEAD", Some(200)));
    assert_eq!(
        x[1].error.as_deref(),
        Some("stream reset by the server (CANCEL)")
    );
    assert_eq!(x[2].path, "/g");
    assert_eq!(
        x[2].error.as_deref(),
        Some("not processed: connection going away (GOAWAY NO_ERROR)")
    );
}

#[test]
fn grpc_unary_streaming_and_trailers_only_errors() {
    let (mut c, mut sv) = (Enc::new(), Enc::new());
    let mut f = Feed::new();
    let req = |c: &mut Enc, m: &str| {
        c.block(&[
            (":method", "POST"),
            (":scheme", "http"),
            (":path", m),
            (":authority", "localhost:50051"),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
        ])
    };
    let mut m = PREFACE.to_vec();
    m.extend(frame(SETTINGS, 0, 0, &[]));
    m.extend(frame(HEADERS, EH, 1, &req(&mut c, "/demo.Echo/Say")));
    m.extend(frame(DATA, ES, 1, &[0, 0, 0, 0, 2, b'h', b'i']));
    m.extend(frame(HEADERS, EH, 3, &req(&mut c, "/demo.Echo/Stream")));
    m.extend(frame(DATA, ES, 3, &[0, 0, 0, 0, 0]));
    m.extend(frame(HEADERS, EH, 5, &req(&mut c, "/demo.Echo/Missing")));
    m.extend(frame(DATA, ES, 5, &[0, 0, 0, 0, 0]));
    f.msg(Side::Tx, &m);
    let ok = [(":status", "200"), ("content-type", "application/grpc")];
    let mut r = frame(HEADERS, EH, 1, &sv.block(&ok));
    r.extend(frame(DATA, 0, 1, &[0, 0, 0, 0, 2, b'h', b'i']));
    r.extend(frame(
        HEADERS,
        EH | ES,
        1,
        &sv.block(&[("grpc-status", "0")]),
    ));
    r.extend(frame(HEADERS, EH, 3, &sv.block(&ok)));
    for _ in 0..3 {
        r.extend(frame(DATA, 0, 3, &[0, 0, 0, 0, 1, b'x']));
    }
    r.extend(frame(
        HEADERS,
        EH | ES,
        3,
        &sv.block(&[("grpc-status", "0")]),
    ));
    r.extend(frame(
        HEADERS,
        EH | ES,
        5,
        &sv.block(&[
            (":status", "200"),
            ("content-type", "application/grpc"),
            ("grpc-status", "5"),
            ("grpc-message", "no such key: %E2%9C%93 k1"),
        ]),
    ));
    f.msg(Side::Rx, &r);
    let x = f.exchanges();
    let rpc: Vec<_> = x
        .iter()
        .map(|x| {
            let r = x.rpc.clone().expect("grpc");
            (r.service, r.method, r.status, r.message)
        })
        .collect();
    assert_eq!(
        rpc,
        [
            ("demo.Echo".into(), "Say".into(), Some(0), None),
            ("demo.Echo".into(), "Stream".into(), Some(0), None),
            (
                "demo.Echo".into(),
                "Missing".into(),
                Some(5),
                Some("no such key: \u{2713} k1".into())
            ),
        ]
    );
    assert!(x.iter().all(|x| x.status == Some(200) && x.error.is_none()));
}

#[test]
fn settings_header_table_size_limits_size_updates() {
    let (mut c, _sv) = (Enc::new(), Enc::new());
    let mut f = Feed::new();
    let mut m = PREFACE.to_vec();
    m.extend(frame(SETTINGS, 0, 0, &[]));
    f.msg(Side::Tx, &m);
    // The server allows the client's encoder 8192 bytes of table.
    f.msg(Side::Rx, &frame(SETTINGS, 0, 0, &[0, 1, 0, 0, 0x20, 0]));
    // Size update to 8192 (0x3f e1 3f), then an indexed GET /.
    let mut block = vec![0x3f, 0xe1, 0x3f];
    block.extend(get(&mut c, "/ok"));
    f.msg(Side::Tx, &frame(HEADERS, ES | EH, 1, &block));
    // Size update to 16384: above the setting, a counted failure.
    let mut block = vec![0x3f, 0xe1, 0x7f];
    block.extend(get(&mut c, "/too-big"));
    f.msg(Side::Tx, &frame(HEADERS, ES | EH, 3, &block));
    assert_eq!(
        f.errors(),
        ["http2: hpack table size update above the peer's setting"]
    );
    let mut sv = Enc::new();
    f.msg(
        Side::Rx,
        &frame(HEADERS, ES | EH, 1, &sv.block(&[(":status", "200")])),
    );
    assert_eq!(f.summary(), [s("GET", "/ok", 200)]);
}

#[test]
fn a_connection_joined_late_is_reported_with_the_header_state_unknown() {
    let (mut c, mut sv) = (Enc::new(), Enc::new());
    // What happened before the trace: the encoders' tables filled.
    let _ = get(&mut c, "/before");
    let _ = sv.block(&[(":status", "200"), ("server", "nginx")]);
    let mut f = Feed::new();
    // The first message seen: a mid-connection HEADERS frame.
    f.msg(
        Side::Tx,
        &frame(HEADERS, ES | EH, 7, &get(&mut c, "/after")),
    );
    f.msg(
        Side::Rx,
        &frame(
            HEADERS,
            EH,
            7,
            &sv.block(&[(":status", "200"), ("server", "nginx")]),
        ),
    );
    f.msg(Side::Rx, &frame(DATA, ES, 7, b"ok"));
    let x = f.exchanges();
    assert_eq!(x.len(), 1);
    assert_eq!(x[0].method, "GET");
    assert_eq!(x[0].status, Some(200));
    assert!(!x[0].server);
    assert_eq!(x[0].error.as_deref(), Some(HEADER_STATE_UNKNOWN));
    // Nothing was an error: unknown entries are expected there.
    assert!(f.errors().is_empty(), "{:?}", f.errors());
}

#[test]
fn holes_in_data_cost_nothing_and_a_lost_header_resyncs() {
    let (mut c, mut sv) = (Enc::new(), Enc::new());
    let mut f = Feed::new();
    let mut m = PREFACE.to_vec();
    m.extend(frame(SETTINGS, 0, 0, &[]));
    m.extend(frame(HEADERS, ES | EH, 1, &get(&mut c, "/big")));
    f.msg(Side::Rx, &m);
    // nginx: HEADERS + DATA frame header by writev, the body by sendfile.
    let mut r = frame(HEADERS, EH, 1, &sv.block(&[(":status", "200")]));
    r.extend(&frame(DATA, ES, 1, &[0; 5000])[..9]);
    f.msg(Side::Tx, &r);
    f.partial(Side::Tx, &[], 5000);
    assert_eq!(f.summary(), [s("GET", "/big", 200)]);
    assert_eq!(f.exchanges()[0].response_bytes, 10 + 5009);
    // A request lost in the ring (a hole over its frame header), then one
    // seen again: reported, with the header state now unknown.
    let lost = frame(HEADERS, ES | EH, 3, &get(&mut c, "/lost"));
    f.seq[1] += lost.len() as u64;
    f.msg(Side::Rx, &frame(HEADERS, ES | EH, 5, &get(&mut c, "/next")));
    f.msg(
        Side::Tx,
        &frame(HEADERS, ES | EH, 5, &sv.block(&[(":status", "204")])),
    );
    let x = f.exchanges();
    assert_eq!(x.len(), 2);
    assert_eq!(x[1].status, Some(204));
    assert_eq!(x[1].method, "GET");
    assert_eq!(x[1].error.as_deref(), Some(HEADER_STATE_UNKNOWN));
    assert!(f
        .out
        .iter()
        .any(|o| matches!(o, Outcome::Lost { bytes } if *bytes == lost.len() as u64)));
    // Close reports the stream still open.
    f.msg(Side::Rx, &frame(HEADERS, ES | EH, 9, &get(&mut c, "/open")));
    let rest = f.conn.close(f.t, "connection closed");
    assert_eq!(rest.len(), 1);
}

/// Arbitrary and truncated input: random bytes, real frames mutated and
/// cut, random splits and holes, with and without bodies kept. No panic,
/// memory per connection bounded,
/// and every stream either reported at close or never opened.
#[test]
fn arbitrary_and_truncated_input_never_panics_and_stays_bounded() {
    let mut rng = fastrand::Rng::with_seed(0x4832_2026);
    let started = std::time::Instant::now();
    let mut iterations = 0u64;
    let mut corpus = Vec::new();
    {
        let (mut c, mut sv) = (Enc::new(), Enc::new());
        corpus.push(PREFACE.to_vec());
        corpus.push(frame(
            SETTINGS,
            0,
            0,
            &[0, 1, 0, 0, 0x10, 0, 0, 3, 0, 0, 0, 100],
        ));
        corpus.push(frame(HEADERS, ES | EH, 1, &get(&mut c, "/x?y=z")));
        corpus.push(frame(HEADERS, EH, 3, &get(&mut c, "/cont")));
        corpus.push(frame(CONT, EH, 3, &[0x82]));
        corpus.push(frame(HEADERS, EH, 1, &sv.block(&[(":status", "200")])));
        corpus.push(frame(DATA, ES, 1, b"body"));
        corpus.push(frame(DATA, 0x08, 3, &[200, 1, 2]));
        corpus.push(frame(RST, 0, 3, &[0, 0, 0, 8]));
        corpus.push(frame(GOAWAY, 0, 0, &[0, 0, 0, 1, 0, 0, 0, 0]));
        corpus.push(frame(
            HEADERS,
            ES | EH,
            5,
            &[0x3f, 0xff, 0xff, 0xff, 0xff, 0x0f],
        ));
        corpus.push(frame(HEADERS, EH, 1, &[0x40, 0x7f, 0xff, 0xff, 0xff, 0x7f]));
    }
    while started.elapsed() < std::time::Duration::from_secs(2) {
        // Every other connection keeps headers and the first bodies' bytes.
        let mut conn = if iterations.is_multiple_of(2) {
            Connection::new()
        } else {
            Connection::with_capture(std::sync::Arc::new(podscope_proto::Capture {
                headers: true,
                body: rng.usize(1..=16384),
                ..Default::default()
            }))
        };
        let mut seq = [0u64; 2];
        let mut t = 0;
        for _ in 0..rng.usize(1..60) {
            let side = if rng.bool() { Side::Tx } else { Side::Rx };
            let mut msg: Vec<u8> = if rng.u8(..) < 40 {
                (0..rng.usize(0..300)).map(|_| rng.u8(..)).collect()
            } else {
                let mut m = Vec::new();
                for _ in 0..rng.usize(1..5) {
                    m.extend_from_slice(&corpus[rng.usize(..corpus.len())]);
                }
                m
            };
            for _ in 0..rng.usize(0..3) {
                if !msg.is_empty() {
                    let i = rng.usize(..msg.len());
                    msg[i] = rng.u8(..);
                }
            }
            let len = msg.len() as u64
                + if rng.u8(..) < 30 {
                    rng.u64(0..20000)
                } else {
                    0
                };
            let cut = rng.usize(0..=msg.len());
            let i = if side == Side::Tx { 0 } else { 1 };
            if rng.u8(..) < 20 {
                seq[i] += rng.u64(0..5000); // messages lost in the ring
            }
            t += 1;
            let _ = conn.data(t, side, seq[i], &msg[..cut], len);
            seq[i] += len;
            assert!(
                conn.held_bytes() < 2 * 1024 * 1024,
                "{} bytes held",
                conn.held_bytes()
            );
        }
        let _ = conn.close(t, "end");
        assert_eq!(conn.open_streams(), 0);
        iterations += 1;
    }
    assert!(iterations > 100, "only {iterations} iterations");
}

/// The HPACK decoder against loona-hpack's (an independent implementation
/// of the table) on valid blocks, and on arbitrary bytes: never a panic,
/// the table bounded by its size.
#[test]
fn hpack_agrees_with_an_independent_decoder_and_survives_garbage() {
    let mut rng = fastrand::Rng::with_seed(0x4b1d);
    let names = ["x-a", "x-b", ":path", "content-type", "x-long-header-name"];
    let started = std::time::Instant::now();
    let mut blocks = 0u64;
    while started.elapsed() < std::time::Duration::from_secs(2) {
        let mut enc = loona_hpack::Encoder::new();
        let mut ours = Decoder::new(true);
        let mut theirs = loona_hpack::Decoder::new();
        for _ in 0..rng.usize(1..20) {
            let fields: Vec<(Vec<u8>, Vec<u8>)> = (0..rng.usize(1..8))
                .map(|_| {
                    let n = names[rng.usize(..names.len())].as_bytes().to_vec();
                    let v: Vec<u8> = (0..rng.usize(0..200))
                        .map(|_| rng.alphanumeric() as u8)
                        .collect();
                    (n, v)
                })
                .collect();
            let block = enc.encode(fields.iter().map(|(n, v)| (&n[..], &v[..])));
            let want = theirs.decode(&block).expect("loona decodes its own block");
            let (got, err) = ours.decode(&block);
            assert_eq!(err, None);
            let got: Vec<(Vec<u8>, Vec<u8>)> = got
                .into_iter()
                .map(|f| (f.name.unwrap(), f.value.unwrap()))
                .collect();
            assert_eq!(got, want);
            blocks += 1;
        }
        // Garbage into a partial and a complete decoder.
        for complete in [false, true] {
            let mut d = Decoder::new(complete);
            for _ in 0..rng.usize(1..20) {
                let g: Vec<u8> = (0..rng.usize(0..400)).map(|_| rng.u8(..)).collect();
                let _ = d.decode(&g);
                assert!(d.table_bytes() <= podscope_proto::hpack::MAX_TABLE_SIZE);
            }
        }
    }
    assert!(blocks > 100, "only {blocks} blocks");
}

/// `--capture-headers` on HTTP/2: regular fields in order (pseudo-headers
/// are the event's own fields), credentials redacted (HPACK never decodes
/// their values), trailers after the response's headers.
#[test]
fn captured_h2_headers_redact_credentials() {
    let (mut c, mut sv) = (Enc::new(), Enc::new());
    let mut f = Feed::new();
    f.conn = Connection::with_capture(std::sync::Arc::new(podscope_proto::Capture {
        headers: true,
        ..Default::default()
    }));
    let mut m = PREFACE.to_vec();
    m.extend(frame(HEADERS, ES | EH, 1, &get(&mut c, "/a?user=bob")));
    f.msg(Side::Rx, &m);
    let mut m = frame(
        HEADERS,
        EH,
        1,
        &sv.block(&[(":status", "200"), ("content-type", "text/plain")]),
    );
    m.extend(frame(DATA, 0, 1, b"hi"));
    m.extend(frame(HEADERS, EH | ES, 1, &sv.block(&[("x-done", "1")])));
    f.msg(Side::Tx, &m);
    let x = &f.exchanges()[0];
    let pairs = |v: &[(&str, &str)]| -> Vec<(String, String)> {
        v.iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    };
    assert_eq!(
        x.captured.as_ref().unwrap().request_headers,
        pairs(&[("user-agent", "test"), ("authorization", "[redacted]")])
    );
    assert_eq!(
        x.captured.as_ref().unwrap().response_headers,
        pairs(&[("content-type", "text/plain"), ("x-done", "1")])
    );
    assert!(!format!("{:?}", f.out).contains("secret"));
}

/// `--capture-body` on HTTP/2: the first bytes of each stream's request and
/// response DATA, padding removed, across frames and split reads, redacted
/// like HTTP/1 bodies; a hole cuts a body where it starts (a sendfile body
/// keeps none), and a stream whose last DATA frame is still coming is not
/// reported before its bytes arrive.
#[test]
fn captured_h2_bodies_are_the_first_bytes_depadded_and_cut_at_holes() {
    const PAD: u8 = 0x8;
    let (mut c, mut sv) = (Enc::new(), Enc::new());
    let mut f = Feed::new();
    f.conn = Connection::with_capture(std::sync::Arc::new(podscope_proto::Capture {
        body: 64,
        ..Default::default()
    }));
    let post = |c: &mut Enc, path: &str| {
        c.block(&[
            (":method", "POST"),
            (":scheme", "http"),
            (":path", path),
            (":authority", "web"),
        ])
    };
    let padded = |data: &[u8], pad: u8| {
        let mut p = vec![pad];
        p.extend_from_slice(data);
        p.extend(std::iter::repeat_n(0xee, usize::from(pad)));
        p
    };
    // Stream 1: a form in two DATA frames (the first padded), the answer in
    // one frame split over two writes.
    let mut m = PREFACE.to_vec();
    m.extend(frame(HEADERS, EH, 1, &post(&mut c, "/login")));
    m.extend(frame(DATA, PAD, 1, &padded(b"user=ann&", 3)));
    m.extend(frame(DATA, ES, 1, b"password=hunter2&remember=1"));
    f.msg(Side::Rx, &m);
    let mut r = frame(HEADERS, EH, 1, &sv.block(&[(":status", "200")]));
    let answer = frame(DATA, ES, 1, b"welcome, ann");
    r.extend(&answer[..9 + 4]);
    f.msg(Side::Tx, &r);
    assert!(
        f.exchanges().is_empty(),
        "reported before its last DATA bytes"
    );
    f.msg(Side::Tx, &answer[9 + 4..]);
    let x = f.exchanges();
    assert_eq!(x.len(), 1);
    let cap = x[0].captured.as_ref().expect("bodies kept");
    assert_eq!(
        cap.request_body.as_deref(),
        Some("user=ann&password=[redacted]&remember=1")
    );
    assert_eq!(cap.response_body.as_deref(), Some("welcome, ann"));
    assert_eq!(x[0].request_bytes, (m.len() - PREFACE.len()) as u64);
    assert!(!format!("{:?}", f.out).contains("hunter2"));

    // Stream 3: 100 bytes of answer keep 64; stream 5: a hole inside the
    // DATA payload keeps what came before it; stream 7: a sendfile body
    // (frame header written, payload never copied) keeps none.
    for id in [3u32, 5, 7] {
        f.msg(
            Side::Rx,
            &frame(HEADERS, ES | EH, id, &get(&mut c, &format!("/s{id}"))),
        );
        let mut r = frame(HEADERS, EH, id, &sv.block(&[(":status", "200")]));
        match id {
            3 => {
                r.extend(frame(DATA, ES, id, &[b'x'; 100]));
                f.msg(Side::Tx, &r);
            }
            5 => {
                let d = frame(DATA, ES, id, b"abc-----------xyz");
                r.extend(&d[..9 + 3]);
                f.msg(Side::Tx, &r);
                f.partial(Side::Tx, &[], 11);
                f.msg(Side::Tx, b"xyz");
            }
            _ => {
                r.extend(&frame(DATA, ES, id, &[0; 5000])[..9]);
                f.msg(Side::Tx, &r);
                f.partial(Side::Tx, &[], 5000);
            }
        }
    }
    let x = f.exchanges();
    assert_eq!(x.len(), 4, "{:?}", f.out);
    let body = |x: &Exchange| x.captured.as_ref().and_then(|c| c.response_body.clone());
    assert_eq!(body(&x[1]).as_deref(), Some("x".repeat(64).as_str()));
    assert_eq!(body(&x[2]).as_deref(), Some("abc"));
    assert_eq!(body(&x[3]), None);
    assert_eq!(x[3].response_bytes, 10 + 5009, "{:?}", x[3]);
    for e in &x[1..] {
        assert_eq!(e.status, Some(200));
        assert!(e.error.is_none(), "{e:?}");
        assert!(e.captured.as_ref().is_none_or(|c| c.request_body.is_none()));
    }

    // Stream 9: the connection closes inside its last DATA frame (its
    // END_STREAM seen): reported at close with what came of the body.
    f.msg(Side::Rx, &frame(HEADERS, ES | EH, 9, &get(&mut c, "/s9")));
    let mut r = frame(HEADERS, EH, 9, &sv.block(&[(":status", "200")]));
    r.extend(&frame(DATA, ES, 9, b"partial answer")[..9 + 7]);
    f.msg(Side::Tx, &r);
    let rest = f.conn.close(f.t, "connection closed");
    let [Outcome::Exchange(e)] = &rest[..] else {
        panic!("{rest:?}")
    };
    assert_eq!(
        e.captured.as_ref().and_then(|c| c.response_body.as_deref()),
        Some("partial")
    );
    assert!(f.errors().is_empty(), "{:?}", f.errors());
}
