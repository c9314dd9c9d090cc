//! `--xtrace`: what request traces cost a chain of pods (docs/otlp.md,
//! "Request traces"). Three pods on the test bed run the host's programs:
//! nginx (`ingress`) proxying to a Python WSGI app (`api`, a thread per
//! request) that, for GET /order, reads a file and calls nginx in a third
//! pod (`stock`) over a new connection. wrk on the host drives the ingress,
//! each request with a `traceparent` of its own. Runs alternate untraced
//! and traced with `podscope trace http,open,tcp -n NS --spans requests`
//! exporting over OTLP/HTTP to a receiver in this process, which decodes
//! every request and counts the spans (the witness of what was exported);
//! the ingress's access log is the witness of the requests.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use prost::Message;
use serde::Serialize;

use crate::pods::Bed;
use crate::traced::Podscope;
use crate::{cpu_ns, peak_rss_kb, Bench};

const INGRESS_PORT: u16 = 18280;
const API_PORT: u16 = 18290;
const STOCK_PORT: u16 = 18291;

/// The API: a thread per request; it does not forward the trace context
/// (its call to the stock pod is tied to the request by the thread).
const APP: &str = r#"
import http.client, sys
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIServer, WSGIRequestHandler, make_server

port, stock = int(sys.argv[1]), sys.argv[2]
host, sport = stock.rsplit(":", 1)

class Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    request_queue_size = 256

class Quiet(WSGIRequestHandler):
    def log_message(self, *a):
        pass

def app(environ, start):
    with open("/srv/catalog.json") as f:
        catalog = f.read()
    c = http.client.HTTPConnection(host, int(sport), timeout=10)
    c.request("GET", "/stock/1")
    body = c.getresponse().read()
    c.close()
    out = b"order %d %s" % (len(catalog), body)
    start("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(out)))])
    return [out]

make_server("0.0.0.0", port, app, server_class=Server, handler_class=Quiet).serve_forever()
"#;

/// wrk's requests, each with a traceparent of its own (thread id and count).
const WRK_LUA: &str = r#"
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end
local n = 0
function request()
  n = n + 1
  local t = string.format("%08x%08x%08x%08x", 0x5eed, tid, math.floor(n / 65536), n % 65536 + 1)
  local s = string.format("%08x%08x", tid, n)
  return wrk.format("GET", "/order", {["traceparent"] = "00-" .. t .. "-" .. s .. "-01"})
end
"#;

/// One wrk run.
#[derive(Debug, Clone, Serialize)]
pub struct ChainRun {
    /// Traced by podscope.
    pub traced: bool,
    /// Requests wrk completed.
    pub completed: u64,
    /// ... answered with another status than 2xx/3xx.
    pub non_2xx: u64,
    /// wrk's requests per second.
    pub rps: f64,
    /// Requests the ingress logged (the witness).
    pub ingress_logged: u64,
    /// podscope's CPU time during the run, in seconds.
    pub podscope_cpu_s: Option<f64>,
    /// podscope's peak RSS, in KiB.
    pub podscope_rss_kb: Option<u64>,
    /// Spans podscope made, exported, failed to export and dropped (its exit report).
    pub spans_produced: Option<u64>,
    pub spans_exported: Option<u64>,
    pub spans_failed: Option<u64>,
    pub spans_dropped: Option<u64>,
    /// Spans the receiver decoded during the run.
    pub spans_received: Option<u64>,
    /// podscope's request-trace report (how spans were parented).
    pub request_spans: Option<String>,
}

/// The figures of `--xtrace`.
#[derive(Debug, Serialize)]
pub struct XtraceBench {
    pub runs: Vec<ChainRun>,
    /// Mean traced rps / mean untraced rps.
    pub throughput_ratio: f64,
    /// podscope CPU per request wrk completed (all its spans), in µs.
    pub cpu_us_per_request: f64,
    /// Spans received per request completed.
    pub spans_per_request: f64,
    /// Every traced run: produced = exported + failed + dropped, and the
    /// receiver got exactly the exported ones.
    pub accounted: bool,
}

/// An OTLP/HTTP receiver for traces: decodes every request and counts its spans.
struct Receiver {
    port: u16,
    spans: Arc<AtomicU64>,
}

impl Receiver {
    fn start() -> Result<Receiver> {
        let l = TcpListener::bind("127.0.0.1:0")?;
        let port = l.local_addr()?.port();
        let spans = Arc::new(AtomicU64::new(0));
        let count = spans.clone();
        std::thread::spawn(move || {
            for s in l.incoming().flatten() {
                let count = count.clone();
                std::thread::spawn(move || {
                    if let Err(e) = serve(s, &count) {
                        eprintln!("xtrace: OTLP receiver: {e:#}");
                    }
                });
            }
        });
        Ok(Receiver { port, spans })
    }
}

/// One connection's requests (HTTP/1.1 keep-alive, bodies by Content-Length).
fn serve(s: TcpStream, count: &AtomicU64) -> Result<()> {
    let mut w = s.try_clone()?;
    let mut r = BufReader::new(s);
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let mut len = None;
        loop {
            let mut h = String::new();
            r.read_line(&mut h)?;
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                match k.trim().to_ascii_lowercase().as_str() {
                    "content-length" => len = v.trim().parse::<usize>().ok(),
                    "transfer-encoding" => {
                        bail!("a chunked request; this receiver reads Content-Length only")
                    }
                    "content-encoding" if v.trim() != "identity" => {
                        bail!("a compressed request ({})", v.trim())
                    }
                    _ => {}
                }
            }
        }
        let mut body = vec![0; len.context("a request without Content-Length")?];
        r.read_exact(&mut body)?;
        let req =
            opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest::decode(
                body.as_slice(),
            )
            .context("not an OTLP traces request")?;
        let n: usize = req
            .resource_spans
            .iter()
            .flat_map(|rs| &rs.scope_spans)
            .map(|ss| ss.spans.len())
            .sum();
        count.fetch_add(n as u64, Ordering::Relaxed);
        if !line.starts_with("POST /v1/traces ") {
            bail!("unexpected request {}", line.trim());
        }
        w.write_all(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\nContent-Length: 0\r\n\r\n",
        )?;
    }
}

/// The three pods; removed on drop.
struct Chain<'a> {
    bed: &'a Bed,
    ns: String,
    dir: PathBuf,
    ingress: String,
}

impl Drop for Chain<'_> {
    fn drop(&mut self) {
        for p in ["ingress", "api", "stock"] {
            self.bed.rm_pod(p, &self.ns);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn nginx_conf(d: &str, port: u16, location: &str) -> String {
    format!(
        "daemon off;\nmaster_process on;\nworker_processes 1;\nuser root;\npid {d}/nginx.pid;\n\
         error_log {d}/error.log;\nevents {{ worker_connections 1024; }}\n\
         http {{\n  access_log {d}/access.log;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
         fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
         server {{\n    listen {port};\n    {location}\n  }}\n}}\n"
    )
}

fn wait_port(what: &str, ip: &str, port: u16) -> Result<()> {
    let t = Instant::now();
    while TcpStream::connect((ip, port)).is_err() {
        if t.elapsed() > Duration::from_secs(30) {
            bail!("{what} did not listen on {ip}:{port} within 30 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

impl<'a> Chain<'a> {
    fn up(bed: &'a Bed) -> Result<Chain<'a>> {
        let ns = format!("xbench-{}", std::process::id());
        let dir = PathBuf::from(format!("/var/tmp/podscope-xbench-{}", std::process::id()));
        for d in ["ingress", "stock"] {
            std::fs::create_dir_all(dir.join(d))?;
        }
        std::fs::write(dir.join("catalog.json"), "{\"items\": [1, 2, 3]}\n")?;
        std::fs::write(dir.join("app.py"), APP)?;
        let mut chain = Chain {
            bed,
            ns,
            dir,
            ingress: String::new(),
        };
        let d = chain.dir.clone();
        std::fs::write(
            d.join("stock/nginx.conf"),
            nginx_conf(
                "/srv/stock",
                STOCK_PORT,
                "location / { return 200 \"in-stock\\n\"; }",
            ),
        )?;
        let nginx = |name: &str| -> Result<(u32, String)> {
            let conf = format!("/srv/{name}/nginx.conf");
            let log = format!("/srv/{name}/error.log");
            bed.run_host_pod(
                name,
                &chain.ns,
                &d,
                &["/usr/sbin/nginx", "-c", &conf, "-e", &log],
            )
        };
        let (_, stock) = nginx("stock")?;
        let (_, api) = bed.run_host_pod(
            "api",
            &chain.ns,
            &d,
            &[
                "/usr/bin/python3",
                "/srv/app.py",
                &API_PORT.to_string(),
                &format!("{stock}:{STOCK_PORT}"),
            ],
        )?;
        std::fs::write(
            d.join("ingress/nginx.conf"),
            nginx_conf(
                "/srv/ingress",
                INGRESS_PORT,
                &format!("location / {{ proxy_pass http://{api}:{API_PORT}; }}"),
            ),
        )?;
        let (_, ingress) = nginx("ingress")?;
        wait_port("the stock pod", &stock, STOCK_PORT)?;
        wait_port("the api pod", &api, API_PORT)?;
        wait_port("the ingress pod", &ingress, INGRESS_PORT)?;
        chain.ingress = ingress;
        Ok(chain)
    }

    fn logged(&self) -> u64 {
        std::fs::read(self.dir.join("ingress/access.log"))
            .map(|b| b.iter().filter(|c| **c == b'\n').count() as u64)
            .unwrap_or(0)
    }
}

/// (completed, non-2xx, rps).
fn wrk(lua: &Path, ip: &str, secs: u64) -> Result<(u64, u64, f64)> {
    let mut cmd = std::process::Command::new("wrk");
    cmd.args(["-t", "2", "-c", "16", "-d", &format!("{secs}s"), "-s"])
        .arg(lua)
        .arg(format!("http://{ip}:{INGRESS_PORT}/order"));
    crate::http::run_wrk(cmd)
}

/// `podscope: OTLP spans: P produced, E exported, F failed, D dropped (...)`.
fn span_counts(lines: &[String]) -> Option<[u64; 4]> {
    let l = lines
        .iter()
        .find_map(|l| l.strip_prefix("podscope: OTLP spans: "))?;
    let nums: Vec<u64> = l
        .split([',', ' ', '('])
        .filter_map(|w| w.parse().ok())
        .take(4)
        .collect();
    nums.try_into().ok()
}

fn mean(v: impl Iterator<Item = f64>) -> f64 {
    let v: Vec<f64> = v.collect();
    if v.is_empty() {
        0.0
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

/// Runs the benchmark: `rounds` untraced/traced pairs of `secs` each.
pub fn run(bench: &Bench, rounds: usize, secs: u64) -> Result<XtraceBench> {
    let bed = Bed::new(&bench.me)?;
    let chain = Chain::up(&bed)?;
    let lua = chain.dir.join("trace.lua");
    std::fs::write(&lua, WRK_LUA)?;
    let rx = Receiver::start()?;
    let endpoint = format!("http://127.0.0.1:{}", rx.port);
    let runtime = format!("unix://{}", bed.socket());
    let args = [
        "-n",
        &chain.ns,
        "--runtime-endpoint",
        &runtime,
        "--otlp-endpoint",
        &endpoint,
        "--otlp-protocol",
        "http/protobuf",
        "--spans",
        "requests",
    ];
    // Warm up (Python's imports, nginx's first connections).
    wrk(&lua, &chain.ingress, 2)?;
    let mut runs = Vec::new();
    for round in 0..rounds {
        for traced in [false, true] {
            eprintln!(
                "xtrace: round {}/{rounds}, {} ...",
                round + 1,
                if traced { "traced" } else { "untraced" }
            );
            let before = chain.logged();
            let received0 = rx.spans.load(Ordering::Relaxed);
            let ps = if traced {
                Some(Podscope::start(&bench.podscope, "http,open,tcp", &args)?)
            } else {
                None
            };
            let cpu0 = ps.as_ref().map_or(0, |p| cpu_ns(p.pid()));
            let (completed, non_2xx, rps) = wrk(&lua, &chain.ingress, secs)?;
            let mut run = ChainRun {
                traced,
                completed,
                non_2xx,
                rps,
                ingress_logged: 0,
                podscope_cpu_s: None,
                podscope_rss_kb: None,
                spans_produced: None,
                spans_exported: None,
                spans_failed: None,
                spans_dropped: None,
                spans_received: None,
                request_spans: None,
            };
            if let Some(p) = ps {
                // The spans wait up to a second or two for their parents;
                // podscope's CPU counts until it has decided them all.
                std::thread::sleep(Duration::from_secs(3));
                let pid = p.pid();
                run.podscope_cpu_s = Some(cpu_ns(pid).saturating_sub(cpu0) as f64 / 1e9);
                run.podscope_rss_kb = Some(peak_rss_kb(pid));
                let lines = p.stop()?;
                if let Some([p, e, f, d]) = span_counts(&lines) {
                    (
                        run.spans_produced,
                        run.spans_exported,
                        run.spans_failed,
                        run.spans_dropped,
                    ) = (Some(p), Some(e), Some(f), Some(d));
                } else {
                    bail!("podscope printed no OTLP span counts: {lines:#?}");
                }
                run.request_spans = lines
                    .iter()
                    .find(|l| l.starts_with("podscope: request spans: "))
                    .cloned();
                run.spans_received = Some(rx.spans.load(Ordering::Relaxed) - received0);
            }
            run.ingress_logged = chain.logged() - before;
            println!(
                "xtrace {:>8}: wrk {} requests ({} not 2xx), {:.0} req/s; ingress logged {}{}",
                if traced { "traced" } else { "untraced" },
                run.completed,
                run.non_2xx,
                run.rps,
                run.ingress_logged,
                match (run.podscope_cpu_s, run.spans_produced) {
                    (Some(cpu), Some(p)) => format!(
                        "; podscope CPU {cpu:.2}s ({:.1} us/request), RSS {} MiB; spans {p} produced, {} exported, {} failed, {} dropped, {} received",
                        cpu * 1e6 / run.completed.max(1) as f64,
                        run.podscope_rss_kb.unwrap_or(0) / 1024,
                        run.spans_exported.unwrap_or(0),
                        run.spans_failed.unwrap_or(0),
                        run.spans_dropped.unwrap_or(0),
                        run.spans_received.unwrap_or(0),
                    ),
                    _ => String::new(),
                }
            );
            if let Some(r) = &run.request_spans {
                println!("  {r}");
            }
            runs.push(run);
        }
    }
    let traced: Vec<&ChainRun> = runs.iter().filter(|r| r.traced).collect();
    let completed: u64 = traced.iter().map(|r| r.completed).sum();
    let cpu: f64 = traced.iter().filter_map(|r| r.podscope_cpu_s).sum();
    let received: u64 = traced.iter().filter_map(|r| r.spans_received).sum();
    let accounted = traced.iter().all(|r| {
        r.spans_produced
            == Some(
                r.spans_exported.unwrap_or(0)
                    + r.spans_failed.unwrap_or(0)
                    + r.spans_dropped.unwrap_or(0),
            )
            && r.spans_received == r.spans_exported
    });
    let out = XtraceBench {
        throughput_ratio: mean(runs.iter().filter(|r| r.traced).map(|r| r.rps))
            / mean(runs.iter().filter(|r| !r.traced).map(|r| r.rps)),
        cpu_us_per_request: cpu * 1e6 / completed.max(1) as f64,
        spans_per_request: received as f64 / completed.max(1) as f64,
        accounted,
        runs,
    };
    println!(
        "\nxtrace: throughput traced/untraced {:.3} (target >= 0.90); podscope CPU {:.2} us per request (all its spans; target <= 5); {:.2} spans received per request; produced = exported + failed + dropped and received = exported in every run: {}",
        out.throughput_ratio, out.cpu_us_per_request, out.spans_per_request, out.accounted
    );
    Ok(out)
}
