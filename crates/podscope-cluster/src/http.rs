//! A small blocking HTTP/1.1 client for the hub's REST API (the CLI and the
//! tests): one request per connection, Content-Length and chunked bodies,
//! streaming reads for NDJSON.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

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

#[derive(Debug)]
struct Body {
    r: BufReader<TcpStream>,
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
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
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

/// Splits `http://host:port[/prefix]` into the address and the path prefix.
fn split_url(base: &str) -> io::Result<(String, String)> {
    let rest = base.strip_prefix("http://").ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("hub URL '{base}' must start with http:// (TLS is not supported yet)"),
        )
    })?;
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
        None => (rest, ""),
    };
    let host = if host.contains(':') {
        host.to_string()
    } else {
        format!("{host}:80")
    };
    Ok((host, path.to_string()))
}

/// Sends one request. `token` becomes `Authorization: Bearer`; `headers` are extra headers.
pub fn request(
    base: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
    headers: &[(&str, &str)],
) -> io::Result<Response> {
    let (host, prefix) = split_url(base)?;
    let stream = TcpStream::connect(&host)?;
    stream.set_nodelay(true)?;
    stream.set_write_timeout(Some(Duration::from_secs(10)))?;
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
    (&stream).write_all(req.as_bytes())?;
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
