//! A small blocking HTTP/1.1 client for the hub's REST API (the CLI and the
//! tests): one request per connection, plain or TLS, Content-Length and
//! chunked bodies, streaming reads for NDJSON; every step bounded in time
//! ([`Timeouts`]), so a hub that accepts and never answers fails clearly.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

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

#[derive(Debug)]
enum Mode {
    Length(u64),
    /// Bytes left in the current chunk; None before the first chunk header; Some(0) after the last.
    Chunked(Option<u64>, bool),
    Close,
}

/// The connection to the hub: plain for http://, TLS for https://; or a
/// body that came another way (the CLI's gRPC transport).
#[derive(Debug)]
enum Conn {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
    Reader(Source),
}

/// A body reader from elsewhere.
struct Source(Box<dyn Read + Send>);

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Source")
    }
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Plain(s) => s.read(buf),
            Conn::Tls(s) => s.read(buf),
            Conn::Reader(r) => r.0.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Conn::Plain(s) => s.write(buf),
            Conn::Tls(s) => s.write(buf),
            Conn::Reader(_) => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "a body source cannot be written to",
            )),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Conn::Plain(s) => s.flush(),
            Conn::Tls(s) => s.flush(),
            Conn::Reader(_) => Ok(()),
        }
    }
}

impl Conn {
    /// The socket under the connection, for its timeouts.
    fn tcp(&self) -> Option<&TcpStream> {
        match self {
            Conn::Plain(s) => Some(s),
            Conn::Tls(s) => Some(s.get_ref()),
            Conn::Reader(_) => None,
        }
    }
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

fn timed_out(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

#[derive(Debug)]
struct Body {
    r: BufReader<Conn>,
    mode: Mode,
    /// The idle limit and the request, for the message when it passes.
    idle: Option<(Duration, String)>,
}

impl Read for Body {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.read_body(buf).map_err(|e| match &self.idle {
            Some((d, req)) if timed_out(&e) => io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "{req}: nothing arrived for {} while reading the answer (idle stream); the hub stopped sending",
                    secs(*d)
                ),
            ),
            _ => e,
        })
    }
}

impl Body {
    fn read_body(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &mut self.mode {
            Mode::Length(0) => Ok(0),
            Mode::Length(n) => {
                let max = (*n).min(buf.len() as u64) as usize;
                let got = self.r.read(&mut buf[..max])?;
                *n -= got as u64;
                Ok(got)
            }
            Mode::Close => self.r.read(buf),
            Mode::Chunked(_, true) => Ok(0),
            Mode::Chunked(left, done) => {
                if left.is_none_or(|l| l == 0) {
                    if left.is_some() {
                        let mut crlf = String::new();
                        self.r.read_line(&mut crlf)?;
                    }
                    let mut size = String::new();
                    if self.r.read_line(&mut size)? == 0 {
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "the connection closed inside a chunked body",
                        ));
                    }
                    let n = u64::from_str_radix(size.trim().split(';').next().unwrap_or(""), 16)
                        .map_err(|_| {
                            io::Error::new(
                                io::ErrorKind::InvalidData,
                                format!("bad chunk size {size:?}"),
                            )
                        })?;
                    if n == 0 {
                        *done = true;
                        return Ok(0);
                    }
                    *left = Some(n);
                }
                let n = left.unwrap_or(0);
                let max = n.min(buf.len() as u64) as usize;
                let got = self.r.read(&mut buf[..max])?;
                if got == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the connection closed inside a chunk",
                    ));
                }
                *left = Some(n - got as u64);
                Ok(got)
            }
        }
    }
}

impl Response {
    /// A response whose body is read from `body` until it ends: answers that
    /// came another way than HTTP/1.1 (the CLI's gRPC transport), so the
    /// code above it handles both alike.
    pub fn from_reader(status: u16, body: Box<dyn Read + Send>) -> Response {
        Response {
            status,
            headers: Vec::new(),
            body: Body {
                r: BufReader::new(Conn::Reader(Source(body))),
                mode: Mode::Close,
                idle: None,
            },
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
    let tcp = connect(&url.addr, t.connect)?;
    tcp.set_nodelay(true)?;
    tcp.set_write_timeout(Some(t.response))?;
    let stream = if url.tls {
        let tls = match tls {
            Some(t) => t,
            None => ClientTls::system()?,
        };
        Conn::Tls(Box::new(tls.connect_blocking(&url.host, tcp, base)?))
    } else {
        Conn::Plain(tcp)
    };
    exchange(stream, &url, method, path, token, body, headers, Some(t))
}

/// Connects to `addr` (host:port), trying each of its addresses within `limit`.
fn connect(addr: &str, limit: Duration) -> io::Result<TcpStream> {
    use std::net::ToSocketAddrs;
    let mut last = None;
    for a in addr.to_socket_addrs()? {
        match TcpStream::connect_timeout(&a, limit) {
            Ok(s) => return Ok(s),
            Err(e) if timed_out(&e) => {
                last = Some(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "no TCP connection to {addr} within {} (connect timed out: nothing answers there; check the URL, and that the hub runs and its port is reachable)",
                        secs(limit)
                    ),
                ))
            }
            Err(e) => last = Some(io::Error::new(e.kind(), format!("connecting to {addr}: {e}"))),
        }
    }
    Err(last.unwrap_or_else(|| {
        io::Error::new(io::ErrorKind::NotFound, format!("{addr} has no address"))
    }))
}

/// A plain-HTTP GET whose every step is bounded by `limit` (the agent's
/// diagnosis of a failed link must not hang on a port that never answers).
pub(crate) fn quick_get(base: &str, path: &str, limit: Duration) -> io::Result<Response> {
    use std::net::ToSocketAddrs;
    let url = split_url(base)?;
    let addr = url.addr.to_socket_addrs()?.next().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("{} has no address", url.addr),
        )
    })?;
    let tcp = TcpStream::connect_timeout(&addr, limit)?;
    tcp.set_read_timeout(Some(limit))?;
    tcp.set_write_timeout(Some(limit))?;
    exchange(Conn::Plain(tcp), &url, "GET", path, None, None, &[], None)
}

/// Writes the request on a connected stream and reads the response head,
/// within `t.response` if given; the body then reads within `t.idle`.
#[allow(clippy::too_many_arguments)] // reason: the request's parts and its limits
fn exchange(
    mut stream: Conn,
    url: &Url,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
    headers: &[(&str, &str)],
    t: Option<Timeouts>,
) -> io::Result<Response> {
    let (host, prefix) = (&url.addr, &url.prefix);
    let mut req =
        format!("{method} {prefix}{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    if let Some(t) = token {
        req.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    let body = body.unwrap_or("");
    if !body.is_empty() || matches!(method, "POST" | "PUT" | "PATCH") {
        // A Content-Type among `headers` wins (tests send others on purpose).
        if !headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
        {
            req.push_str("Content-Type: application/json\r\n");
        }
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    req.push_str(body);
    let what = format!("{method} {path}");
    if let (Some(t), Some(tcp)) = (t, stream.tcp()) {
        tcp.set_read_timeout(Some(t.response))?;
    }
    stream.write_all(req.as_bytes())?;
    stream.flush()?;
    let mut r = BufReader::new(stream);
    let no_head = |e: io::Error| {
        match t {
        Some(t) if timed_out(&e) => io::Error::new(
            io::ErrorKind::TimedOut,
            format!(
                "{what}: no response headers within {} (the server accepted the connection but did not answer; is it a podscope hub, and is it stuck?)",
                secs(t.response)
            ),
        ),
        _ => e,
    }
    };
    let mut status_line = String::new();
    if r.read_line(&mut status_line).map_err(no_head)? == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("{what}: the server closed the connection without an answer"),
        ));
    }
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("not an HTTP response: {status_line:?}"),
            )
        })?;
    let mut headers = Vec::new();
    loop {
        let mut l = String::new();
        if r.read_line(&mut l).map_err(no_head)? == 0 || l.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let get = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    let mode = if get("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        Mode::Chunked(None, false)
    } else if let Some(n) = get("content-length").and_then(|v| v.parse().ok()) {
        Mode::Length(n)
    } else {
        Mode::Close
    };
    let idle = t.and_then(|t| t.idle);
    if let (Some(t), Some(tcp)) = (t, r.get_ref().tcp()) {
        tcp.set_read_timeout(t.idle)?;
    }
    Ok(Response {
        status,
        headers,
        body: Body {
            r,
            mode,
            idle: idle.map(|d| (d, what)),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

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

    fn quick() -> Timeouts {
        Timeouts {
            connect: Duration::from_millis(300),
            response: Duration::from_millis(300),
            idle: Some(Duration::from_millis(300)),
        }
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
            server("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n6\r\n{\"a\":1}\r\n");
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
        let first = lines.next().unwrap();
        let e = match first {
            Ok(l) => {
                assert_eq!(l, r#"{"a":1}"#);
                lines.next().unwrap().unwrap_err()
            }
            Err(e) => e,
        };
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert!(e.to_string().contains("(idle stream)"), "{e}");
        // Without an idle limit (request_with), the body may wait.
        assert_eq!(
            request_with(None, &base, "GET", "/", None, None, &[])
                .unwrap()
                .body
                .idle,
            None
        );
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
