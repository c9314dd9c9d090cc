//! The HTTP/1.x connection parser on byte streams as the kernel delivers
//! them: split reads, pipelining, chunked bodies, bodyless responses,
//! interim responses, holes, and arbitrary input.

use podscope_proto::{Connection, Exchange, Outcome, Side};

/// Feeds one message per (side, bytes) with the full bytes captured.
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

    /// A read or write of `len` bytes of which the first `data.len()` were captured.
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

    fn errors(&self) -> usize {
        self.out
            .iter()
            .filter(|o| matches!(o, Outcome::ParseError { .. }))
            .count()
    }
}

fn s(m: &str, p: &str, st: u16) -> (String, String, Option<u16>) {
    (m.to_string(), p.to_string(), Some(st))
}

#[test]
fn server_request_and_response_split_over_many_reads() {
    let mut f = Feed::new();
    let req = b"GET /index.html?user=bob HTTP/1.1\r\nHost: example\r\nAccept: */*\r\n\r\n";
    for piece in req.chunks(7) {
        f.msg(Side::Rx, piece);
    }
    let resp = b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\nhello world";
    for piece in resp.chunks(5) {
        f.msg(Side::Tx, piece);
    }
    let x = f.exchanges();
    assert_eq!(x.len(), 1, "{:?}", f.out);
    assert!(x[0].server);
    assert_eq!(x[0].method, "GET");
    assert_eq!(x[0].path, "/index.html?user=?");
    assert_eq!(x[0].host, "example");
    assert_eq!(x[0].status, Some(200));
    assert_eq!(x[0].request_bytes, req.len() as u64);
    assert_eq!(x[0].response_bytes, resp.len() as u64);
    assert_eq!(x[0].start_ns, 1000);
    assert!(x[0].end_ns > x[0].start_ns);
    assert!(!x[0].truncated);
}

#[test]
fn client_keep_alive_and_pipelining_match_in_order() {
    let mut f = Feed::new();
    // Three pipelined requests in one write, responses in two reads split mid-head.
    f.msg(
        Side::Tx,
        b"GET /a HTTP/1.1\r\nHost: h\r\n\r\nHEAD /b HTTP/1.1\r\nHost: h\r\n\r\nGET /c HTTP/1.1\r\nHost: h\r\n\r\n",
    );
    let resps = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabcHTTP/1.1 200 OK\r\nContent-Length: 999\r\n\r\nHTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\nno";
    let (a, b) = resps.split_at(50);
    f.msg(Side::Rx, a);
    f.msg(Side::Rx, b);
    assert_eq!(
        f.summary(),
        vec![
            s("GET", "/a", 200),
            s("HEAD", "/b", 200),
            s("GET", "/c", 404)
        ]
    );
    assert!(f.exchanges().iter().all(|x| !x.server && x.error.is_none()));
    assert_eq!(f.conn.pending(), 0);
    // The connection is reused afterwards.
    f.msg(Side::Tx, b"DELETE /d HTTP/1.1\r\n\r\n");
    f.msg(Side::Rx, b"HTTP/1.1 204 No Content\r\n\r\n");
    assert_eq!(f.summary()[3], s("DELETE", "/d", 204));
}

#[test]
fn chunked_bodies_both_ways_with_extensions_and_trailers() {
    let mut f = Feed::new();
    f.msg(
        Side::Rx,
        b"POST /upload HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhel",
    );
    f.msg(Side::Rx, b"lo\r\n6\r\n world\r\n0\r\nX-Checksum: 1\r\n\r\n");
    f.msg(
        Side::Tx,
        b"HTTP/1.1 201 Created\r\nTransfer-Encoding: gzip, chunked\r\n\r\n3\r\nok!\r\n",
    );
    assert!(f.exchanges().is_empty(), "the response is not over yet");
    f.msg(Side::Tx, b"0\r\n\r\n");
    f.msg(Side::Rx, b"GET /next HTTP/1.1\r\n\r\n");
    f.msg(
        Side::Tx,
        b"HTTP/1.1 304 Not Modified\r\nContent-Length: 50\r\n\r\n",
    );
    assert_eq!(
        f.summary(),
        vec![s("POST", "/upload", 201), s("GET", "/next", 304)]
    );
    assert_eq!(f.errors(), 0);
    let x = &f.exchanges()[0];
    assert_eq!(x.request_bytes, 100);
}

#[test]
fn expect_100_continue_counts_the_interim_response() {
    let mut f = Feed::new();
    f.msg(
        Side::Tx,
        b"PUT /f HTTP/1.1\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n",
    );
    let interim = b"HTTP/1.1 100 Continue\r\n\r\n";
    f.msg(Side::Rx, interim);
    assert!(f.exchanges().is_empty());
    f.msg(Side::Tx, b"data");
    let fin = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
    f.msg(Side::Rx, fin);
    let x = f.exchanges();
    assert_eq!(f.summary(), vec![s("PUT", "/f", 200)]);
    assert_eq!(x[0].response_bytes, (interim.len() + fin.len()) as u64);
}

#[test]
fn bodies_not_captured_are_skipped_by_length() {
    // nginx: head by writev (captured), body by sendfile (bytes only); a
    // long body whose capture stops after 1 KiB.
    let mut f = Feed::new();
    f.msg(Side::Rx, b"GET /big HTTP/1.1\r\n\r\n");
    let head = b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n";
    f.msg(Side::Tx, head);
    f.partial(Side::Tx, b"", 60000);
    f.partial(Side::Tx, &[b'x'; 1024], 40000);
    f.msg(Side::Rx, b"GET /after HTTP/1.1\r\n\r\n");
    f.msg(Side::Tx, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(
        f.summary(),
        vec![s("GET", "/big", 200), s("GET", "/after", 200)]
    );
    assert_eq!(f.exchanges()[0].response_bytes, head.len() as u64 + 100000);
    assert!(!f.exchanges()[0].truncated);
}

#[test]
fn chunks_longer_than_the_capture_keep_the_framing() {
    // One chunk per write, each captured only in its first 1 KiB.
    let mut f = Feed::new();
    f.msg(
        Side::Tx,
        b"POST /up HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
    );
    let mut chunk = b"bb8\r\n".to_vec();
    chunk.extend(std::iter::repeat_n(b'z', 3000));
    chunk.extend_from_slice(b"\r\n");
    f.partial(Side::Tx, &chunk[..1024], chunk.len() as u64);
    f.partial(Side::Tx, &chunk[..1024], chunk.len() as u64);
    f.msg(Side::Tx, b"0\r\n\r\n");
    f.msg(Side::Rx, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(f.summary(), vec![s("POST", "/up", 200)]);
    let x = &f.exchanges()[0];
    assert_eq!(x.request_bytes, 49 + 2 * chunk.len() as u64 + 5);
    assert!(!x.truncated);
    assert_eq!(f.errors(), 0);
}

#[test]
fn a_hole_over_the_last_chunks_ends_the_message() {
    // curl: the whole chunked body (data chunk and last chunk) in one send,
    // captured only in part; then either a new request or more chunks.
    for more_chunks in [false, true] {
        let mut f = Feed::new();
        let head = b"POST /up HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
        f.msg(Side::Tx, head);
        let mut body = b"1388\r\n".to_vec();
        body.extend(std::iter::repeat_n(b'b', 5000));
        body.extend_from_slice(b"\r\n0\r\n\r\n");
        f.partial(Side::Tx, &body[..1024], body.len() as u64);
        if more_chunks {
            // The guess was wrong: the body goes on; followed, not counted twice.
            f.msg(Side::Tx, b"3\r\nabc\r\n0\r\n\r\n");
        }
        f.msg(Side::Rx, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
        f.msg(Side::Tx, b"GET /next HTTP/1.1\r\n\r\n");
        f.msg(Side::Rx, b"HTTP/1.1 204 No Content\r\n\r\n");
        assert_eq!(
            f.summary(),
            vec![s("POST", "/up", 200), s("GET", "/next", 204)]
        );
        let x = &f.exchanges()[0];
        assert_eq!(x.request_bytes, (head.len() + body.len()) as u64);
        assert!(!x.truncated);
        assert_eq!(f.errors(), 0);
    }
}

#[test]
fn a_head_longer_than_the_capture_is_reported_truncated_and_sync_recovers() {
    let mut f = Feed::new();
    let mut req = b"GET /long?q=secret HTTP/1.1\r\nX-Pad: ".to_vec();
    req.extend(std::iter::repeat_n(b'a', 3000));
    req.extend_from_slice(b"\r\n\r\n");
    f.partial(Side::Rx, &req[..1024], req.len() as u64);
    f.msg(Side::Tx, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
    f.msg(Side::Rx, b"GET /short HTTP/1.1\r\n\r\n");
    f.msg(Side::Tx, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
    let x = f.exchanges();
    assert_eq!(
        f.summary(),
        vec![s("GET", "/long?q=?", 200), s("GET", "/short", 200)]
    );
    assert!(x[0].truncated);
    assert!(!x[1].truncated);
}

#[test]
fn lost_messages_are_counted_and_the_parser_resyncs() {
    let mut f = Feed::new();
    f.msg(Side::Tx, b"GET /one HTTP/1.1\r\n\r\n");
    // The response head was lost in the kernel: the next read's offset jumps.
    f.seq[1] += 40;
    f.msg(Side::Rx, b"body bytes");
    f.msg(Side::Tx, b"GET /two HTTP/1.1\r\n\r\n");
    f.msg(Side::Rx, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    let lost: u64 = f
        .out
        .iter()
        .map(|o| match o {
            Outcome::Lost { bytes } => *bytes,
            _ => 0,
        })
        .sum();
    assert_eq!(lost, 40);
    // The one response is matched to the oldest request; the other is
    // reported as unanswered at close, never dropped.
    let closed = f.conn.close(99_999, "connection closed");
    f.out.extend(closed);
    let x = f.exchanges();
    assert_eq!(x.len(), 2, "{x:?}");
    assert_eq!(x.iter().filter(|x| x.error.is_some()).count(), 1);
}

#[test]
fn a_response_without_length_ends_at_close() {
    let mut f = Feed::new();
    f.msg(Side::Tx, b"GET / HTTP/1.0\r\n\r\n");
    f.msg(Side::Rx, b"HTTP/1.0 200 OK\r\n\r\nsome");
    f.msg(Side::Rx, b" body");
    assert!(f.exchanges().is_empty());
    let closed = f.conn.close(50_000, "connection closed");
    f.out.extend(closed);
    let x = f.exchanges();
    assert_eq!(f.summary(), vec![s("GET", "/", 200)]);
    assert_eq!(x[0].version, "HTTP/1.0");
    assert!(x[0].error.is_none(), "{x:?}");
    assert_eq!(x[0].response_bytes, 19 + 9);
}

#[test]
fn garbage_on_an_http_connection_is_a_counted_parse_error() {
    let mut f = Feed::new();
    f.msg(Side::Rx, b"GET / HTTP/1.1\r\n\r\n");
    f.msg(Side::Tx, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    f.msg(Side::Rx, b"\x16\x03\x01 not http");
    f.msg(Side::Rx, b"GET /again HTTP/1.1\r\n\r\n");
    f.msg(Side::Tx, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(f.errors(), 1);
    assert_eq!(
        f.summary(),
        vec![s("GET", "/", 200), s("GET", "/again", 200)]
    );
}

#[test]
fn credentials_never_reach_an_exchange() {
    let mut f = Feed::new();
    f.msg(
        Side::Tx,
        b"GET /p?token=SECRET123 HTTP/1.1\r\nAuthorization: Bearer SECRET123\r\nCookie: s=SECRET123\r\n\r\n",
    );
    f.msg(
        Side::Rx,
        b"HTTP/1.1 200 OK\r\nSet-Cookie: s=SECRET123\r\nContent-Length: 0\r\n\r\n",
    );
    let text = format!("{:?}", f.out);
    assert!(!text.contains("SECRET123"), "{text}");
    assert_eq!(f.summary(), vec![s("GET", "/p?token=?", 200)]);
}

#[test]
fn upgrade_stops_parsing() {
    let mut f = Feed::new();
    f.msg(Side::Rx, b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\n\r\n");
    f.msg(Side::Tx, b"HTTP/1.1 101 Switching Protocols\r\n\r\n");
    f.msg(Side::Rx, b"\x81\x05hello");
    f.msg(Side::Tx, b"\x81\x05hello");
    assert_eq!(f.summary(), vec![s("GET", "/ws", 101)]);
    assert_eq!(f.errors(), 0);
}

/// Random, mutated and truncated streams for a bounded time: no panic, the
/// pending queue stays bounded, and every request the parser started is
/// accounted for at close (as an exchange, possibly with an error).
#[test]
fn arbitrary_and_truncated_input_never_panics_and_stays_bounded() {
    let corpus: &[&[u8]] = &[
        b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n",
        b"POST /b HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello",
        b"POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        b"HTTP/1.1 100 Continue\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\n",
        b"HTTP/1.0 200 OK\r\n\r\n",
        b"\r\n\r\n",
        b"HEAD / HTTP/1.1\r\n\r\n",
    ];
    let mut rng = fastrand::Rng::with_seed(0x9d5c_0fee);
    let started = std::time::Instant::now();
    let mut iterations = 0u64;
    while started.elapsed() < std::time::Duration::from_secs(2) {
        // Every other connection keeps headers and 64 bytes of bodies.
        let capture = iterations % 2 == 1;
        let mut conn = if capture {
            Connection::with_capture(std::sync::Arc::new(podscope_proto::Capture {
                headers: true,
                body: 64,
                redact: vec!["host".into()],
            }))
        } else {
            Connection::new()
        };
        let mut seq = [0u64; 2];
        let mut t = 0;
        for _ in 0..rng.usize(1..40) {
            let side = if rng.bool() { Side::Tx } else { Side::Rx };
            let mut msg: Vec<u8> = if rng.u8(..) < 40 {
                (0..rng.usize(0..200)).map(|_| rng.u8(..)).collect()
            } else {
                let mut m = Vec::new();
                for _ in 0..rng.usize(1..4) {
                    m.extend_from_slice(corpus[rng.usize(..corpus.len())]);
                }
                m
            };
            // Mutate a few bytes, then cut.
            for _ in 0..rng.usize(0..3) {
                if !msg.is_empty() {
                    let i = rng.usize(..msg.len());
                    msg[i] = rng.u8(..);
                }
            }
            let len = msg.len() as u64 + if rng.u8(..) < 30 { rng.u64(0..5000) } else { 0 };
            let cut = rng.usize(0..=msg.len());
            let i = if side == Side::Tx { 0 } else { 1 };
            if rng.u8(..) < 10 {
                seq[i] += rng.u64(1..100); // a lost message
            }
            t += 1;
            let out = conn.data(t, side, seq[i], &msg[..cut], len);
            seq[i] += len;
            assert!(conn.pending() <= 256);
            for o in out {
                if let Outcome::Exchange(x) = o {
                    // A body kept is at most its 64 bytes (escaped: 4 each,
                    // plus what redaction adds); none at all without capture.
                    if let Some(c) = &x.captured {
                        assert!(capture, "{c:?}");
                        for b in [&c.request_body, &c.response_body].into_iter().flatten() {
                            assert!(b.len() <= 64 * 4 + 64, "{b:?}");
                        }
                    }
                }
            }
        }
        let _ = conn.close(t + 1, "end");
        assert_eq!(conn.pending(), 0);
        iterations += 1;
    }
    assert!(iterations > 100, "only {iterations} iterations ran");
    eprintln!("fuzzed {iterations} connections");
}

/// `--capture-headers` / `--capture-body`: headers in order with credentials
/// redacted, bodies (chunked de-framed) cut at the limit with secrets
/// redacted, and a body whose bytes were not captured kept only up to the
/// hole. Off (the default), nothing of either is kept.
#[test]
fn captured_headers_and_bodies_never_keep_credentials() {
    let capture = podscope_proto::Capture {
        headers: true,
        body: 40,
        redact: vec!["x-tenant".into()],
    };
    let mut f = Feed::new();
    f.conn = Connection::with_capture(std::sync::Arc::new(capture));
    let body = r#"{"user":"ann","password":"hunter2"}"#;
    let req = format!(
        "POST /login?next=/a HTTP/1.1\r\nHost: web\r\nAuthorization: Bearer s3cret\r\n\
         Cookie: sid=abc\r\nX-Tenant: acme\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    // The head and the body in separate writes.
    let (head, rest) = req.split_at(req.len() - body.len());
    f.msg(Side::Tx, head.as_bytes());
    f.msg(Side::Tx, rest.as_bytes());
    f.msg(
        Side::Rx,
        b"HTTP/1.1 200 OK\r\nSet-Cookie: sid=new\r\nTransfer-Encoding: chunked\r\n\r\n\
          5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
    );
    // A second request whose body the kernel copied only in part.
    f.partial(
        Side::Tx,
        b"PUT /f HTTP/1.1\r\nContent-Length: 100\r\n\r\nfirst part",
        40 + 100,
    );
    f.msg(Side::Rx, b"HTTP/1.1 204 No Content\r\n\r\n");
    let x = f.exchanges();
    assert_eq!(x.len(), 2, "{:?}", f.out);
    assert_eq!(
        x[0].captured.as_ref().unwrap().request_headers,
        [
            ("host", "web"),
            ("authorization", "[redacted]"),
            ("cookie", "[redacted]"),
            ("x-tenant", "[redacted]"),
            ("content-type", "application/json"),
            ("content-length", "35"),
        ]
        .map(|(n, v)| (n.to_string(), v.to_string()))
    );
    assert_eq!(
        x[0].captured.as_ref().unwrap().request_body.as_deref(),
        Some(r#"{"user":"ann","password":"[redacted]"}"#)
    );
    assert_eq!(
        x[0].captured.as_ref().unwrap().response_headers[0],
        ("set-cookie".into(), "[redacted]".into())
    );
    assert_eq!(
        x[0].captured.as_ref().unwrap().response_body.as_deref(),
        Some("hello world")
    );
    assert_eq!(
        x[1].captured.as_ref().unwrap().request_body.as_deref(),
        Some("first part")
    );
    assert_eq!(
        x[1].captured.as_ref().unwrap().response_body,
        None,
        "a 204 has no body"
    );
    let all = format!("{:?}", f.out);
    for secret in ["s3cret", "sid=abc", "acme", "hunter2", "sid=new"] {
        assert!(!all.contains(secret), "{secret} kept: {all}");
    }
    // Off: nothing beyond the default fields.
    let mut off = Feed::new();
    off.msg(Side::Tx, req.as_bytes());
    off.msg(Side::Rx, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
    let x = off.exchanges();
    assert_eq!(x[0].captured, None);
}
