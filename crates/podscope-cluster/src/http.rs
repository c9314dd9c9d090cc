//! A small blocking HTTP/1.1 client for the hub's REST API (the CLI and the
//! tests): one request per connection, plain or TLS, Content-Length and
//! chunked bodies, streaming reads for NDJSON.

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

#[derive(Debug)]
struct Body {
    r: BufReader<Conn>,
    mode: Mode,
}

impl Read for Body {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
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
/// certificates); ignored for http://.
pub fn request_with(
    tls: Option<&ClientTls>,
    base: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
    headers: &[(&str, &str)],
) -> io::Result<Response> {
    let url = split_url(base)?;
    let tcp = TcpStream::connect(&url.addr)?;
    tcp.set_nodelay(true)?;
    tcp.set_write_timeout(Some(Duration::from_secs(10)))?;
    let stream = if url.tls {
        let tls = match tls {
            Some(t) => t,
            None => ClientTls::system()?,
        };
        Conn::Tls(Box::new(tls.connect_blocking(&url.host, tcp, base)?))
    } else {
        Conn::Plain(tcp)
    };
    exchange(stream, &url, method, path, token, body, headers)
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
    exchange(Conn::Plain(tcp), &url, "GET", path, None, None, &[])
}

/// Writes the request on a connected stream and reads the response head.
fn exchange(
    mut stream: Conn,
    url: &Url,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
    headers: &[(&str, &str)],
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
    if !body.is_empty() || matches!(method, "POST" | "PUT") {
        req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    req.push_str("\r\n");
    req.push_str(body);
    stream.write_all(req.as_bytes())?;
    stream.flush()?;
    let mut r = BufReader::new(stream);
    let mut status_line = String::new();
    r.read_line(&mut status_line)?;
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
        if r.read_line(&mut l)? == 0 || l.trim().is_empty() {
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
    Ok(Response {
        status,
        headers,
        body: Body { r, mode },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
