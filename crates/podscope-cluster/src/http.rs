//! The CLI's and the tests' blocking client for the hub's REST API, on
//! hyper's HTTP/1.1 client: one request per connection, plain or TLS, bodies
//! read as a stream (NDJSON arrives line by line), every step bounded in time
//! ([`Timeouts`]) so a hub that accepts and never answers fails clearly.
//!
//! Its callers are blocking (the CLI, tests, some from inside an async
//! block): the connections run on one small runtime of this module's own,
//! and a caller waits for each step on a channel, never in `block_on`, so a
//! call works from any thread as blocking I/O would. The body is fetched one
//! frame per read: nothing is read ahead of the caller.

use std::future::Future;
use std::io::{self, BufRead, BufReader, Read};
use std::sync::OnceLock;
use std::time::Duration;

use bytes::{Buf, Bytes};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::runtime::Runtime;

use crate::tls::ClientTls;

/// A response whose body is read as a stream.
#[derive(Debug)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// Header names (lowercase) and values.
    pub headers: Vec<(String, String)>,
    body: Body,
}

/// How long each step of a request may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// To establish the TCP connection.
    pub connect: Duration,
    /// From the request sent to the end of the response headers.
    pub response: Duration,
    /// The longest silence while the body is read; None: no limit (a stream
    /// that may legitimately stay quiet, from a server that sends no keep-alives).
    pub idle: Option<Duration>,
}

impl Default for Timeouts {
    /// For a REST call: the hub answers those at once.
    fn default() -> Timeouts {
        Timeouts {
            connect: Duration::from_secs(5),
            response: Duration::from_secs(10),
            idle: Some(Duration::from_secs(10)),
        }
    }
}

impl Timeouts {
    /// Every limit cut to at most `left` (and at least 100 ms): a call that
    /// must be over by a deadline (`trace --duration`).
    pub fn within(self, left: Duration) -> Timeouts {
        let left = left.max(Duration::from_millis(100));
        Timeouts {
            connect: self.connect.min(left),
            response: self.response.min(left),
            idle: Some(self.idle.map_or(left, |i| i.min(left))),
        }
    }
}

fn secs(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

/// A body: from the hub over HTTP/1.1, or from elsewhere (the CLI's gRPC
/// transport).
enum Body {
    Hub(Stream),
    Reader(Box<dyn Read + Send>),
}

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Body::Hub(s) => f
                .debug_struct("Hub")
                .field("what", &s.what)
                .field("idle", &s.idle)
                .finish_non_exhaustive(),
            Body::Reader(_) => f.write_str("Reader"),
        }
    }
}

impl Read for Body {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Body::Hub(s) => s.read(buf),
            Body::Reader(r) => r.read(buf),
        }
    }
}

/// The runtime every connection of this client runs on, built on first use.
fn runtime() -> io::Result<&'static Runtime> {
    static RT: OnceLock<Result<Runtime, String>> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("podscope-http")
            .enable_io()
            .enable_time()
            .build()
            .map_err(|e| format!("starting the HTTP client's runtime: {e}"))
    })
    .as_ref()
    .map_err(|e| io::Error::other(e.clone()))
}

/// Runs `f` on the client's runtime and waits for its result.
fn run<T: Send + 'static>(
    f: impl Future<Output = io::Result<T>> + Send + 'static,
) -> io::Result<T> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    runtime()?.spawn(async move {
        let _ = tx.send(f.await);
    });
    rx.recv().unwrap_or_else(|_| {
        Err(io::Error::other(
            "the HTTP client's task ended without a result",
        ))
    })
}

/// A body as hyper decodes it (Content-Length, chunked, or to the close).
struct Stream {
    /// None once it ended or failed.
    body: Option<Incoming>,
    /// What is left of the last frame.
    frame: Bytes,
    /// The longest silence between frames.
    idle: Option<Duration>,
    /// The request ("GET /v1/pods"), for the messages.
    what: String,
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.frame.is_empty() {
            let Some(mut body) = self.body.take() else {
                return Ok(0);
            };
            let idle = self.idle;
            let (body, next) = run(async move {
                let next = match idle {
                    Some(d) => tokio::time::timeout(d, body.frame()).await.ok(),
                    None => Some(body.frame().await),
                };
                Ok((body, next))
            })?;
            match next {
                None => {
                    // It may still come: the caller decides.
                    self.body = Some(body);
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!(
                            "{}: nothing arrived for {} while reading the answer (idle stream); the hub stopped sending",
                            self.what,
                            secs(idle.unwrap_or_default())
                        ),
                    ));
                }
                Some(None) => return Ok(0),
                Some(Some(Err(e))) => return Err(body_error(&self.what, &e)),
                // Trailers carry no data.
                Some(Some(Ok(f))) => {
                    self.body = Some(body);
                    self.frame = f.into_data().unwrap_or_default();
                }
            }
        }
        let n = buf.len().min(self.frame.len());
        self.frame.copy_to_slice(&mut buf[..n]);
        Ok(n)
    }
}

/// An error and its causes in words, as hyper's Display gives only the first.
fn words(e: &hyper::Error) -> String {
    let mut s = e.to_string();
    for c in crate::tls::chain(e).skip(1) {
        s.push_str(": ");
        s.push_str(&c.to_string());
    }
    s
}

/// The kind of the I/O failure under a hyper error, if one is.
fn io_kind(e: &hyper::Error) -> Option<io::ErrorKind> {
    crate::tls::chain(e).find_map(|c| c.downcast_ref::<io::Error>().map(io::Error::kind))
}

/// A failure before the response headers were all in.
fn head_error(what: &str, e: &hyper::Error) -> io::Error {
    if e.is_incomplete_message() {
        return io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("{what}: the server closed the connection without an answer"),
        );
    }
    if e.is_parse() || e.is_parse_status() {
        return io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{what}: not an HTTP/1.1 response ({}); is this the URL of a podscope hub?",
                words(e)
            ),
        );
    }
    let kind = io_kind(e).unwrap_or(io::ErrorKind::Other);
    io::Error::new(kind, format!("{what}: {}", words(e)))
}

/// A failure inside the body.
fn body_error(what: &str, e: &hyper::Error) -> io::Error {
    let kind = io_kind(e).unwrap_or(io::ErrorKind::InvalidData);
    if e.is_incomplete_message() || kind == io::ErrorKind::UnexpectedEof {
        return io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!(
                "{what}: the connection closed in the middle of the answer ({})",
                words(e)
            ),
        );
    }
    io::Error::new(kind, format!("{what}: reading the answer: {}", words(e)))
}

impl Response {
    /// A response whose body is read from `body` until it ends: answers that
    /// came another way than HTTP/1.1 (the CLI's gRPC transport), so the
    /// code above it handles both alike.
    pub fn from_reader(status: u16, body: Box<dyn Read + Send>) -> Response {
        Response {
            status,
            headers: Vec::new(),
            body: Body::Reader(body),
        }
    }

    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as a reader, for callers that read it their own way (the
    /// benchmark's streaming client).
    pub fn into_body(self) -> impl Read + Send {
        self.body
    }

    /// The body, line by line, as it arrives.
    pub fn lines(self) -> io::Lines<BufReader<impl Read>> {
        BufReader::new(self.body).lines()
    }

    /// The whole body as text.
    pub fn text(mut self) -> io::Result<String> {
        let mut s = String::new();
        self.body.read_to_string(&mut s)?;
        Ok(s)
    }

    /// The whole body as JSON.
    pub fn json(self) -> io::Result<serde_json::Value> {
        let t = self.text()?;
        serde_json::from_str(&t)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{e}: {t}")))
    }
}

/// A hub URL taken apart.
#[derive(Debug, PartialEq)]
struct Url {
    tls: bool,
    /// host:port, for connecting and the Host header.
    addr: String,
    /// The host alone, for the TLS server name.
    host: String,
    /// The path prefix, without a trailing slash.
    prefix: String,
}

/// Splits `http[s]://host[:port][/prefix]`.
fn split_url(base: &str) -> io::Result<Url> {
    let (tls, rest) = if let Some(r) = base.strip_prefix("https://") {
        (true, r)
    } else if let Some(r) = base.strip_prefix("http://") {
        (false, r)
    } else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("hub URL '{base}' must start with http:// or https://"),
        ));
    };
    let (addr, path) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
        None => (rest, ""),
    };
    // A port follows the last ':', unless that ':' is inside an IPv6 [address].
    let (host, addr) = match addr.rfind(':').filter(|&i| !addr[i..].contains(']')) {
        Some(i) => (addr[..i].to_string(), addr.to_string()),
        None => (
            addr.to_string(),
            format!("{addr}:{}", if tls { 443 } else { 80 }),
        ),
    };
    Ok(Url {
        tls,
        addr,
        host,
        prefix: path.to_string(),
    })
}

/// Sends one request. `token` becomes `Authorization: Bearer`; `headers` are
/// extra headers. An https:// URL is checked against the system's CA
/// certificates; [`request_with`] takes a `--tls-ca`.
pub fn request(
    base: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
    headers: &[(&str, &str)],
) -> io::Result<Response> {
    request_with(None, base, method, path, token, body, headers)
}

/// [`request`] with the trust for an https:// URL (None: the system's CA
/// certificates; ignored for http://), and the default [`Timeouts`] except
/// that the body may stay quiet for as long as it likes.
pub fn request_with(
    tls: Option<&ClientTls>,
    base: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
    headers: &[(&str, &str)],
) -> io::Result<Response> {
    let t = Timeouts {
        idle: None,
        ..Timeouts::default()
    };
    request_timed(tls, base, method, path, token, body, headers, t)
}

/// [`request_with`] with every step bounded by `t`; the errors say which
/// step timed out (connect, response headers, idle body).
#[allow(clippy::too_many_arguments)] // reason: the request's parts, as request_with takes them, plus the limits
pub fn request_timed(
    tls: Option<&ClientTls>,
    base: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
    headers: &[(&str, &str)],
    t: Timeouts,
) -> io::Result<Response> {
    let url = split_url(base)?;
    let tls = match (url.tls, tls) {
        (false, _) => None,
        (true, Some(tls)) => Some((tls.clone(), base.to_string())),
        (true, None) => Some((ClientTls::system()?.clone(), base.to_string())),
    };
    let req = build(&url, method, path, token, body, headers)?;
    send(url, tls, req, format!("{method} {path}"), t)
}

/// A plain-HTTP GET whose every step is bounded by `limit` (the agent's
/// diagnosis of a failed link must not hang on a port that never answers).
pub(crate) fn quick_get(base: &str, path: &str, limit: Duration) -> io::Result<Response> {
    let url = split_url(base)?;
    let req = build(&url, "GET", path, None, None, &[])?;
    let t = Timeouts {
        connect: limit,
        response: limit,
        idle: Some(limit),
    };
    send(url, None, req, format!("GET {path}"), t)
}

/// The request as hyper sends it; a method, path or header that HTTP cannot
/// carry is an error naming it.
fn build(
    url: &Url,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
    headers: &[(&str, &str)],
) -> io::Result<hyper::Request<Full<Bytes>>> {
    use hyper::header::{HeaderName, HeaderValue};
    let bad = |m: String| io::Error::new(io::ErrorKind::InvalidInput, m);
    let m = hyper::Method::from_bytes(method.as_bytes())
        .map_err(|_| bad(format!("'{method}' is not an HTTP method")))?;
    let target = format!("{}{path}", url.prefix);
    let uri: hyper::Uri = target.parse().map_err(|e| {
        bad(format!(
            "{method} {path}: '{target}' is not a valid request path ({e}); percent-encode it"
        ))
    })?;
    let mut req = hyper::Request::new(Full::new(Bytes::from(
        body.unwrap_or("").as_bytes().to_vec(),
    )));
    *req.method_mut() = m;
    *req.uri_mut() = uri;
    let body_len = body.map_or(0, str::len);
    let mut all: Vec<(&str, String)> = vec![
        ("host", url.addr.clone()),
        // One request per connection: the server closes it after the answer.
        ("connection", "close".into()),
    ];
    if let Some(t) = token {
        all.push(("authorization", format!("Bearer {t}")));
    }
    all.extend(headers.iter().map(|(k, v)| (*k, v.to_string())));
    if body_len > 0 || matches!(method, "POST" | "PUT" | "PATCH") {
        // A Content-Type among `headers` wins (tests send others on purpose).
        if !headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
        {
            all.push(("content-type", "application/json".into()));
        }
        all.push(("content-length", body_len.to_string()));
    }
    let h = req.headers_mut();
    for (k, v) in all {
        let name = HeaderName::from_bytes(k.as_bytes())
            .map_err(|_| bad(format!("{method} {path}: '{k}' is not an HTTP header name")))?;
        let value = HeaderValue::from_str(&v).map_err(|_| {
            bad(format!(
                "{method} {path}: the value of header {k} is not valid in HTTP (a control character or a line break?)"
            ))
        })?;
        h.append(name, value);
    }
    Ok(req)
}

/// Connects (over TLS if given: the trust and the URL for its messages),
/// sends `req` and reads the response head, each step within `t`; the body
/// then reads within `t.idle`. `what` names the request in errors.
fn send(
    url: Url,
    tls: Option<(ClientTls, String)>,
    req: hyper::Request<Full<Bytes>>,
    what: String,
    t: Timeouts,
) -> io::Result<Response> {
    use std::net::ToSocketAddrs;
    let addrs: Vec<_> = url
        .addr
        .to_socket_addrs()
        .map_err(|e| io::Error::new(e.kind(), format!("resolving {}: {e}", url.addr)))?
        .collect();
    let w = what.clone();
    let answer = run(async move {
        let tcp = connect(&url.addr, &addrs, t.connect).await?;
        tcp.set_nodelay(true)?;
        let head = match tls {
            Some((tls, base)) => {
                let s = tls.connect(&url.host, tcp, &base).await?;
                tokio::time::timeout(t.response, exchange(s, req, &w)).await
            }
            None => tokio::time::timeout(t.response, exchange(tcp, req, &w)).await,
        };
        head.unwrap_or_else(|_| {
            Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "{w}: no response headers within {} (the server accepted the connection but did not answer; is it a podscope hub, and is it stuck?)",
                    secs(t.response)
                ),
            ))
        })
    })?;
    let status = answer.status().as_u16();
    let headers = answer
        .headers()
        .iter()
        .map(|(k, v)| {
            let v = String::from_utf8_lossy(v.as_bytes()).into_owned();
            (k.as_str().to_string(), v)
        })
        .collect();
    Ok(Response {
        status,
        headers,
        body: Body::Hub(Stream {
            body: Some(answer.into_body()),
            frame: Bytes::new(),
            idle: t.idle,
            what,
        }),
    })
}

/// Connects to `addr` (host:port), trying each of its addresses within `limit`.
async fn connect(
    addr: &str,
    addrs: &[std::net::SocketAddr],
    limit: Duration,
) -> io::Result<TcpStream> {
    let mut last = None;
    for a in addrs {
        match tokio::time::timeout(limit, TcpStream::connect(a)).await {
            Ok(Ok(s)) => return Ok(s),
            Ok(Err(e)) => last = Some(io::Error::new(e.kind(), format!("connecting to {addr}: {e}"))),
            Err(_) => {
                last = Some(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "no TCP connection to {addr} within {} (connect timed out: nothing answers there; check the URL, and that the hub runs and its port is reachable)",
                        secs(limit)
                    ),
                ))
            }
        }
    }
    Err(last.unwrap_or_else(|| {
        io::Error::new(io::ErrorKind::NotFound, format!("{addr} has no address"))
    }))
}

/// Sends `req` on a connected stream and waits for the response head.
async fn exchange<T>(
    io: T,
    req: hyper::Request<Full<Bytes>>,
    what: &str,
) -> io::Result<hyper::Response<Incoming>>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| head_error(what, &e))?;
    // On the response's own runtime: the connection moves only while the
    // head or the body is awaited. Its failures reach the request or the body.
    tokio::spawn(conn);
    sender
        .send_request(req)
        .await
        .map_err(|e| head_error(what, &e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::net::{TcpListener, TcpStream};
    use std::sync::mpsc;

    /// A real listener that accepts, reads the request, then sends `answer`
    /// and nothing more (holding the connection open).
    fn server(answer: &'static str) -> String {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for s in l.incoming() {
                let Ok(mut s) = s else { break };
                let mut b = [0u8; 4096];
                let _ = s.read(&mut b);
                let _ = s.write_all(answer.as_bytes());
                held.push(s);
            }
        });
        format!("http://127.0.0.1:{port}")
    }

    /// A real listener that hands its first connection, and the request
    /// read from it (head and Content-Length body), to `f`.
    fn serve_once(f: impl FnOnce(TcpStream, String) + Send + 'static) -> String {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut req = Vec::new();
            let mut b = [0u8; 4096];
            loop {
                let n = s.read(&mut b).unwrap();
                req.extend_from_slice(&b[..n]);
                let text = String::from_utf8_lossy(&req).into_owned();
                let whole = text.find("\r\n\r\n").is_some_and(|end| {
                    let len = text
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length: "))
                        .map_or(0, |n| n.trim().parse().unwrap());
                    text.len() >= end + 4 + len
                });
                if whole || n == 0 {
                    f(s, text);
                    return;
                }
            }
        });
        format!("http://127.0.0.1:{port}")
    }

    fn quick() -> Timeouts {
        Timeouts {
            connect: Duration::from_millis(300),
            response: Duration::from_millis(300),
            idle: Some(Duration::from_millis(300)),
        }
    }

    fn get(base: &str) -> io::Result<Response> {
        request_timed(None, base, "GET", "/v1/pods", None, None, &[], quick())
    }

    #[test]
    fn a_server_that_never_answers_times_out_on_the_headers() {
        let base = server("");
        let t = std::time::Instant::now();
        let e =
            request_timed(None, &base, "GET", "/v1/pods", None, None, &[], quick()).unwrap_err();
        assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        let m = e.to_string();
        assert!(
            m.contains("GET /v1/pods: no response headers within 0.3s"),
            "{m}"
        );
    }

    #[test]
    fn a_stream_that_goes_quiet_times_out_as_idle() {
        let base =
            server("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n8\r\n{\"a\":1}\n\r\n");
        let r = request_timed(
            None,
            &base,
            "GET",
            "/v1/sessions/x/events",
            None,
            None,
            &[],
            quick(),
        )
        .unwrap();
        assert_eq!(r.status, 200);
        let mut lines = r.lines();
        // What was sent arrives; then the silence is an error, not a hang.
        assert_eq!(lines.next().unwrap().unwrap(), r#"{"a":1}"#);
        let e = lines.next().unwrap().unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        let m = e.to_string();
        assert!(
            m.contains("GET /v1/sessions/x/events: nothing arrived for 0.3s")
                && m.contains("(idle stream)"),
            "{m}"
        );
        // Without an idle limit (request_with), the body may wait.
        let r = request_with(None, &base, "GET", "/", None, None, &[]).unwrap();
        assert!(matches!(r.body, Body::Hub(Stream { idle: None, .. })));
    }

    /// An NDJSON event stream must reach the caller line by line as the
    /// server sends it, not when the body ends: the server sends its second
    /// line only once the client has told it that it read the first.
    #[test]
    fn a_chunked_stream_arrives_line_by_line() {
        let (read_tx, read_rx) = mpsc::channel::<()>();
        let (verdict_tx, verdict_rx) = mpsc::channel::<bool>();
        let base = serve_once(move |mut s, _| {
            s.write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-type: application/x-ndjson\r\n\r\n")
                .unwrap();
            s.write_all(b"b\r\n{\"line\":1}\n\r\n").unwrap();
            let in_time = read_rx.recv_timeout(Duration::from_secs(5)).is_ok();
            verdict_tx.send(in_time).unwrap();
            s.write_all(b"b\r\n{\"line\":2}\n\r\n0\r\n\r\n").unwrap();
        });
        let t = Timeouts {
            idle: Some(Duration::from_secs(10)),
            ..Timeouts::default()
        };
        let r = request_timed(None, &base, "GET", "/events", None, None, &[], t).unwrap();
        assert_eq!(r.header("content-type"), Some("application/x-ndjson"));
        let mut lines = r.lines();
        assert_eq!(lines.next().unwrap().unwrap(), r#"{"line":1}"#);
        read_tx.send(()).unwrap();
        assert!(
            verdict_rx.recv().unwrap(),
            "the first line reached the caller only after the server sent the rest"
        );
        assert_eq!(lines.next().unwrap().unwrap(), r#"{"line":2}"#);
        assert!(
            lines.next().is_none(),
            "the stream ends with its last chunk"
        );
    }

    /// A stream the caller drops closes its connection at once, though the
    /// server sends nothing more (the hub then drops that client).
    #[test]
    fn dropping_a_quiet_stream_closes_the_connection() {
        let (closed_tx, closed_rx) = mpsc::channel::<bool>();
        let base = serve_once(move |mut s, _| {
            s.write_all(
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nb\r\n{\"line\":1}\n\r\n",
            )
            .unwrap();
            s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
            let mut b = [0u8; 16];
            // EOF (the client closed) before the timeout.
            let _ = closed_tx.send(matches!(s.read(&mut b), Ok(0)));
        });
        let r = get(&base).unwrap();
        let mut lines = r.lines();
        assert_eq!(lines.next().unwrap().unwrap(), r#"{"line":1}"#);
        drop(lines);
        assert!(
            closed_rx.recv().unwrap(),
            "the connection stayed open after the stream was dropped"
        );
    }

    /// Callers block, some from inside an async block (a test's tonic
    /// client next to REST calls): the client must work there too.
    #[test]
    fn works_from_inside_an_async_block() {
        let base = serve_once(|mut s, _| {
            s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                .unwrap();
        });
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let text = rt.block_on(async { get(&base).unwrap().text().unwrap() });
        assert_eq!(text, "ok");
    }

    #[test]
    fn the_request_carries_host_token_and_a_json_body() {
        let (tx, rx) = mpsc::channel::<String>();
        let base = serve_once(move |mut s, req| {
            tx.send(req).unwrap();
            s.write_all(b"HTTP/1.1 201 Created\r\ncontent-length: 11\r\nset-cookie: a=1\r\nset-cookie: b=2\r\n\r\n{\"id\":\"s\"}\n")
                .unwrap();
            // Held open: a Content-Length body ends without the close.
            std::thread::sleep(Duration::from_secs(5));
        });
        let r = request(
            &format!("{base}/prefix/"),
            "POST",
            "/v1/sessions?x=1",
            Some("tok"),
            Some(r#"{"probes":["exec"]}"#),
            &[("X-Extra", "yes")],
        )
        .unwrap();
        assert_eq!(r.status, 201);
        let cookies: Vec<_> = r
            .headers
            .iter()
            .filter(|(k, _)| k == "set-cookie")
            .collect();
        assert_eq!(cookies.len(), 2, "{:?}", r.headers);
        let t = std::time::Instant::now();
        assert_eq!(r.json().unwrap()["id"], "s");
        assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
        let req = rx.recv().unwrap();
        let port = base.rsplit(':').next().unwrap();
        assert!(
            req.starts_with("POST /prefix/v1/sessions?x=1 HTTP/1.1\r\n"),
            "{req}"
        );
        for h in [
            format!("host: 127.0.0.1:{port}\r\n"),
            "authorization: Bearer tok\r\n".into(),
            "x-extra: yes\r\n".into(),
            "content-type: application/json\r\n".into(),
            "content-length: 19\r\n".into(),
        ] {
            assert!(req.contains(&h), "{h:?} missing from {req}");
        }
        assert!(req.ends_with("\r\n\r\n{\"probes\":[\"exec\"]}"), "{req}");
    }

    #[test]
    fn a_body_that_runs_to_the_close_is_read_whole() {
        let base = serve_once(|mut s, _| {
            s.write_all(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nall of it")
                .unwrap();
        });
        assert_eq!(get(&base).unwrap().text().unwrap(), "all of it");
    }

    /// hyper's failures are told in words, never as its debug structs.
    #[test]
    fn broken_answers_are_named() {
        let no_debug = |m: &str| {
            assert!(!m.contains("Error(") && !m.contains("Kind"), "{m}");
        };
        // Accepts, reads the request, closes.
        let base = serve_once(|s, _| drop(s));
        let e = get(&base).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
        let m = e.to_string();
        assert_eq!(
            m,
            "GET /v1/pods: the server closed the connection without an answer"
        );
        // Answers something that is not HTTP.
        let base = serve_once(|mut s, _| {
            s.write_all(b"SSH-2.0-OpenSSH_9.6\r\n\r\n").unwrap();
        });
        let e = get(&base).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        let m = e.to_string();
        assert!(
            m.starts_with("GET /v1/pods: not an HTTP/1.1 response (") && m.contains("podscope hub"),
            "{m}"
        );
        no_debug(&m);
        // Closes inside a chunk.
        let base = serve_once(|mut s, _| {
            s.write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n10\r\nonly half")
                .unwrap();
        });
        let e = get(&base).unwrap().text().unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
        let m = e.to_string();
        assert!(
            m.starts_with("GET /v1/pods: the connection closed in the middle of the answer ("),
            "{m}"
        );
        no_debug(&m);
        // A header value with a line break is refused before anything is sent.
        let e = request(&base, "GET", "/", None, None, &[("x", "a\r\nb: c")]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert!(e.to_string().contains("header x is not valid"), "{e}");
    }

    #[test]
    fn a_port_whose_backlog_is_full_times_out_on_connect() {
        // Linux drops SYNs to a listener whose accept queue is full, as a
        // host that does not answer would: fill one and never accept.
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let mut held = Vec::new();
        loop {
            match TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
                Ok(s) => held.push(s),
                Err(_) => break,
            }
            assert!(held.len() < 5000, "the backlog never filled");
        }
        let base = format!("http://{addr}");
        let e =
            request_timed(None, &base, "GET", "/v1/pods", None, None, &[], quick()).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert!(e.to_string().contains("connect timed out"), "{e}");
        assert!(e.to_string().contains(&addr.to_string()), "{e}");
    }

    #[test]
    fn limits_within_a_deadline() {
        let t = Timeouts::default().within(Duration::from_secs(2));
        assert_eq!(t.connect, Duration::from_secs(2));
        assert_eq!(t.response, Duration::from_secs(2));
        assert_eq!(t.idle, Some(Duration::from_secs(2)));
        let t = Timeouts {
            idle: None,
            ..Timeouts::default()
        }
        .within(Duration::from_secs(60));
        assert_eq!(t.idle, Some(Duration::from_secs(60)));
        assert_eq!(t.response, Duration::from_secs(10));
    }

    #[test]
    fn urls() {
        let u = |tls, addr: &str, host: &str, prefix: &str| Url {
            tls,
            addr: addr.into(),
            host: host.into(),
            prefix: prefix.into(),
        };
        assert_eq!(
            split_url("http://hub:7700").unwrap(),
            u(false, "hub:7700", "hub", "")
        );
        assert_eq!(
            split_url("https://hub.example/podscope/").unwrap(),
            u(true, "hub.example:443", "hub.example", "/podscope")
        );
        assert_eq!(
            split_url("http://hub").unwrap(),
            u(false, "hub:80", "hub", "")
        );
        assert_eq!(
            split_url("https://[::1]:7700").unwrap(),
            u(true, "[::1]:7700", "[::1]", "")
        );
        assert_eq!(
            split_url("https://[::1]").unwrap(),
            u(true, "[::1]:443", "[::1]", "")
        );
        let e = split_url("hub:7700").unwrap_err().to_string();
        assert!(e.contains("http:// or https://"), "{e}");
    }
}
