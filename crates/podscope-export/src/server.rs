//! The `/metrics` HTTP endpoint: a few dozen lines of HTTP/1.1 on std's
//! `TcpListener`, because one GET route does not need a server framework.
//!
//! Each connection gets its own short-lived thread (at most [`MAX_CLIENTS`]
//! at once; more are answered 503 at once), with read and write timeouts, so
//! a stalled client cannot block scrapes. Every response closes the connection.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::metrics::Metrics;
use crate::text::Format;
use crate::Error;

/// Concurrent connections served; Prometheus uses one per target.
const MAX_CLIENTS: usize = 8;
/// The request head must arrive within this long.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest request head accepted.
const MAX_HEAD: usize = 16 * 1024;

/// A running `/metrics` endpoint; stops when dropped.
#[derive(Debug)]
pub struct Server {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    /// Binds `addr` (port 0 picks a free port) and serves `metrics` on a background thread.
    pub fn start(addr: SocketAddr, metrics: Arc<Metrics>) -> Result<Server, Error> {
        let listener = TcpListener::bind(addr).map_err(|source| Error::Bind { addr, source })?;
        let local = listener
            .local_addr()
            .map_err(|source| Error::Bind { addr, source })?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("podscope-metrics".into())
            .spawn(move || accept_loop(listener, metrics, flag))
            .map_err(|source| Error::Thread {
                what: "metrics server",
                source,
            })?;
        Ok(Server {
            addr: local,
            stop,
            thread: Some(thread),
        })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept().
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn accept_loop(listener: TcpListener, metrics: Arc<Metrics>, stop: Arc<AtomicBool>) {
    let busy = Arc::new(AtomicUsize::new(0));
    for conn in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let Ok(mut stream) = conn else {
            // EMFILE and friends: back off instead of spinning.
            std::thread::sleep(Duration::from_millis(50));
            continue;
        };
        if busy.fetch_add(1, Ordering::SeqCst) >= MAX_CLIENTS {
            busy.fetch_sub(1, Ordering::SeqCst);
            let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
            let _ = respond(
                &mut stream,
                503,
                "text/plain",
                b"too many concurrent scrapes\n",
                &[],
            );
            continue;
        }
        let metrics = metrics.clone();
        let done = busy.clone();
        let spawned = std::thread::Builder::new()
            .name("podscope-scrape".into())
            .spawn(move || {
                let _ = handle(stream, &metrics);
                done.fetch_sub(1, Ordering::SeqCst);
            });
        if spawned.is_err() {
            busy.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// The parts of a request head this endpoint cares about.
#[derive(Debug, PartialEq, Eq)]
struct Request {
    method: String,
    path: String,
    accept: Option<String>,
}

fn parse_head(head: &str) -> Option<Request> {
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let method = first.next()?.to_owned();
    let target = first.next()?;
    let version = first.next()?;
    if !version.starts_with("HTTP/1.") {
        return None;
    }
    let path = target.split(['?', '#']).next().unwrap_or("").to_owned();
    let mut accept: Option<String> = None;
    for line in lines {
        if let Some((k, v)) = line.split_once(':') {
            if k.trim().eq_ignore_ascii_case("accept") {
                // Repeated Accept headers are one comma-separated list.
                let v = v.trim();
                accept = Some(match accept {
                    Some(a) => format!("{a},{v}"),
                    None => v.to_owned(),
                });
            }
        }
    }
    Some(Request {
        method,
        path,
        accept,
    })
}

fn read_head(stream: &mut TcpStream) -> std::io::Result<Option<String>> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            buf.truncate(end);
            return Ok(Some(String::from_utf8_lossy(&buf).into_owned()));
        }
        if buf.len() > MAX_HEAD {
            return Ok(None);
        }
    }
}

fn handle(mut stream: TcpStream, metrics: &Metrics) -> std::io::Result<()> {
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let Some(head) = read_head(&mut stream)? else {
        return respond(&mut stream, 400, "text/plain", b"bad request\n", &[]);
    };
    let Some(req) = parse_head(&head) else {
        return respond(&mut stream, 400, "text/plain", b"bad request\n", &[]);
    };
    if req.path != "/metrics" {
        return respond(
            &mut stream,
            404,
            "text/plain",
            b"not found; podscope serves its metrics at /metrics\n",
            &[],
        );
    }
    let head_only = req.method == "HEAD";
    if req.method != "GET" && !head_only {
        return respond(
            &mut stream,
            405,
            "text/plain",
            b"method not allowed; use GET\n",
            &[("Allow", "GET, HEAD")],
        );
    }
    let format = Format::negotiate(req.accept.as_deref());
    match metrics.render(format) {
        Ok(body) if head_only => {
            write_head(&mut stream, 200, format.content_type(), body.len(), &[])?;
            stream.flush()
        }
        Ok(body) => respond(
            &mut stream,
            200,
            format.content_type(),
            body.as_bytes(),
            &[],
        ),
        Err(e) => respond(
            &mut stream,
            500,
            "text/plain",
            format!("{e}\n").as_bytes(),
            &[],
        ),
    }
}

fn write_head(
    stream: &mut TcpStream,
    status: u16,
    content_type: &str,
    len: usize,
    extra: &[(&str, &str)],
) -> std::io::Result<()> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        503 => "Service Unavailable",
        _ => "Internal Server Error",
    };
    let mut head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {len}\r\nConnection: close\r\n"
    );
    for (k, v) in extra {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())
}

fn respond(
    stream: &mut TcpStream,
    status: u16,
    content_type: &str,
    body: &[u8],
    extra: &[(&str, &str)],
) -> std::io::Result<()> {
    write_head(stream, status, content_type, body.len(), extra)?;
    stream.write_all(body)?;
    stream.flush()?;
    let _ = stream.shutdown(Shutdown::Write);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(addr: SocketAddr, request: &str) -> String {
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(request.as_bytes()).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    }

    #[test]
    fn head_parsing() {
        let r =
            parse_head("GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\naccept: text/plain\r\nAccept: */*")
                .unwrap();
        assert_eq!(r.method, "GET");
        assert_eq!(r.path, "/metrics");
        assert_eq!(r.accept.as_deref(), Some("text/plain,*/*"));
        assert!(parse_head("GARBAGE").is_none());
    }

    #[test]
    fn serves_metrics_in_both_formats_and_404_elsewhere() {
        let m = Metrics::new("n1", Duration::from_secs(60));
        m.probe_stats(podscope_model::ProbeKind::Open, 5, 0);
        let server = Server::start("127.0.0.1:0".parse().unwrap(), m).unwrap();
        let addr = server.local_addr();

        let text = get(addr, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
        assert!(
            text.contains("Content-Type: text/plain; version=0.0.4"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE podscope_probe_events_total counter"),
            "{text}"
        );
        assert!(
            text.contains("podscope_probe_events_total{probe=\"open\"} 5"),
            "{text}"
        );
        assert!(!text.contains("# EOF"));

        let om = get(
            addr,
            "GET /metrics HTTP/1.1\r\nAccept: application/openmetrics-text;version=1.0.0,text/plain;q=0.5\r\n\r\n",
        );
        assert!(
            om.contains("Content-Type: application/openmetrics-text; version=1.0.0"),
            "{om}"
        );
        assert!(om.contains("# TYPE podscope_probe_events counter"), "{om}");
        assert!(om.trim_end().ends_with("# EOF"), "{om}");

        let nf = get(addr, "GET / HTTP/1.1\r\n\r\n");
        assert!(nf.starts_with("HTTP/1.1 404"), "{nf}");
        let post = get(addr, "POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
        assert!(post.starts_with("HTTP/1.1 405"), "{post}");
        drop(server);
        assert!(TcpStream::connect(addr).is_err(), "stopped when dropped");
    }
}
