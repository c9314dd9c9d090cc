//! Sinks for events: aligned columns for people, JSON lines for programs.
//! Both report losses as they happen and a summary at the end.

use std::io::{self, Write};

use podscope_bpf::ProbeStats;
use podscope_model::{Event, EventData, ProbeKind, TcpKind, Timestamp};
use serde::Serialize;

/// Where events go.
pub trait Sink {
    /// One event.
    fn event(&mut self, ev: &Event) -> io::Result<()>;
    /// A probe lost `delta` more events (`total` since start).
    fn lost(&mut self, probe: ProbeKind, delta: u64, total: u64) -> io::Result<()>;
    /// The end-of-trace totals.
    fn summary(&mut self, elapsed_ns: u64, stats: &[ProbeStats]) -> io::Result<()>;
    /// Push buffered output out.
    fn flush(&mut self) -> io::Result<()>;
    /// The probes' counts for this session so far (about once a second).
    fn stats(&mut self, _stats: &[ProbeStats]) -> io::Result<()> {
        Ok(())
    }
}

impl<S: Sink + ?Sized> Sink for Box<S> {
    fn event(&mut self, ev: &Event) -> io::Result<()> {
        (**self).event(ev)
    }
    fn lost(&mut self, probe: ProbeKind, delta: u64, total: u64) -> io::Result<()> {
        (**self).lost(probe, delta, total)
    }
    fn summary(&mut self, elapsed_ns: u64, stats: &[ProbeStats]) -> io::Result<()> {
        (**self).summary(elapsed_ns, stats)
    }
    fn flush(&mut self) -> io::Result<()> {
        (**self).flush()
    }
    fn stats(&mut self, stats: &[ProbeStats]) -> io::Result<()> {
        (**self).stats(stats)
    }
}

pub fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    if b < 1024 {
        return format!("{b}B");
    }
    let mut v = b as f64;
    let mut i = 0;
    while v >= 1024.0 && i < UNITS.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    format!("{v:.1}{}", UNITS[i])
}

pub fn human_ns(ns: u64) -> String {
    match ns {
        0..=999 => format!("{ns}ns"),
        1_000..=999_999 => format!("{:.1}us", ns as f64 / 1e3),
        1_000_000..=999_999_999 => format!("{:.1}ms", ns as f64 / 1e6),
        _ => format!("{:.2}s", ns as f64 / 1e9),
    }
}

fn clock(ts: Timestamp) -> String {
    // 2026-11-22T03:22:39.123456789Z -> 03:22:39.123
    let s = ts.rfc3339();
    s.get(11..23).unwrap_or(&s).to_string()
}

fn shell_words(args: &[String]) -> String {
    args.iter()
        .map(|a| {
            if a.is_empty() || a.contains(|c: char| c.is_whitespace() || c == '"' || c == '\'') {
                format!("{a:?}")
            } else {
                a.clone()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// `tcp 10.0.0.1:80 -> 10.0.0.2:41000` (IPv6 in brackets; no port: none).
fn flow_text(
    protocol: &str,
    family: &str,
    saddr: &str,
    sport: u16,
    daddr: &str,
    dport: u16,
) -> String {
    if family.is_empty() {
        return "non-IP".into();
    }
    let ep = |a: &str, p: u16| {
        let a = if family == "ipv6" {
            format!("[{a}]")
        } else {
            a.to_string()
        };
        if p == 0 {
            a
        } else {
            format!("{a}:{p}")
        }
    };
    format!("{protocol} {} -> {}", ep(saddr, sport), ep(daddr, dport))
}

/// The DETAILS column: the probe's fields in a line a person can scan.
pub fn details(ev: &Event) -> String {
    match &ev.data {
        EventData::Exec(e) => {
            let mut s = format!("{} [ppid {}]", shell_words(&e.args), e.ppid);
            if e.args.first().map(String::as_str) != Some(e.filename.as_str()) {
                s = format!("{} {s}", e.filename);
            }
            if e.args_truncated {
                s.push_str(" (argv truncated)");
            }
            if let Some(err) = &e.error {
                s.push_str(&format!(" FAILED {err}"));
            }
            s
        }
        EventData::Exit(e) => {
            let how = match (e.exit_code, e.signal) {
                (Some(c), _) => format!("exit code {c}"),
                (None, Some(sig)) => format!(
                    "killed by signal {sig}{}",
                    if e.core_dumped { " (core dumped)" } else { "" }
                ),
                _ => "exited".into(),
            };
            format!("{how} after {} [ppid {}]", human_ns(e.lifetime_ns), e.ppid)
        }
        EventData::Tcp(t) => {
            let (l, r) = if t.family == "ipv6" {
                (
                    format!("[{}]:{}", t.saddr, t.sport),
                    format!("[{}]:{}", t.daddr, t.dport),
                )
            } else {
                (
                    format!("{}:{}", t.saddr, t.sport),
                    format!("{}:{}", t.daddr, t.dport),
                )
            };
            let arrow = if t.role == "server" { "<-" } else { "->" };
            let mut s = format!(
                "{l} {arrow} {r}{}",
                dialed(&t.family, &t.dialed_addr, t.dialed_port)
            );
            if t.kind == TcpKind::Close {
                s.push_str(&format!(
                    " lifetime {} tx {} rx {}",
                    human_ns(t.duration_ns.unwrap_or(0)),
                    human_bytes(t.tx_bytes.unwrap_or(0)),
                    human_bytes(t.rx_bytes.unwrap_or(0))
                ));
                if let Some(r) = t.retransmits.filter(|r| *r > 0) {
                    s.push_str(&format!(" retrans {r}"));
                }
            }
            if let Some(err) = &t.error {
                s.push_str(&format!(" {err}"));
            }
            if matches!(
                t.kind,
                TcpKind::Retransmit | TcpKind::ResetSent | TcpKind::ResetReceived
            ) {
                s.push_str(&format!(" state {}", t.state));
            }
            s
        }
        EventData::Bio(b) => {
            let mut s = format!(
                "{} {} {} sector {} latency {}",
                b.disk,
                b.op,
                human_bytes(b.bytes as u64),
                b.sector,
                human_ns(b.latency_ns)
            );
            if b.queued_ns > 0 {
                s.push_str(&format!(" queued {}", human_ns(b.queued_ns)));
            }
            if let Some(e) = b.error {
                s.push_str(&format!(" ERROR {e}"));
            }
            s
        }
        EventData::Cache(c) => format!(
            "hits {} misses {} dirtied {} ratio {}",
            c.hits,
            c.misses,
            c.dirtied,
            c.hit_ratio
                .map(|r| format!("{:.1}%", r * 100.0))
                .unwrap_or_else(|| "-".into())
        ),
        EventData::Open(o) => {
            let result = match (&o.fd, &o.error) {
                (Some(fd), _) => format!("fd {fd}"),
                (None, Some(e)) => e.clone(),
                _ => String::new(),
            };
            format!("{} {} {result}", o.path, o.flags_str)
        }
        EventData::Http(h) => http_details(h),
        EventData::Syscall(c) => {
            let args = c.decoded.clone().unwrap_or_else(|| c.args.join(", "));
            let result = match (c.ret, &c.error) {
                (None, _) => "?".to_string(),
                (Some(_), Some(e)) => format!("-1 {e}"),
                (Some(r), None) if r > 0xffff => format!("{r:#x}"),
                (Some(r), None) => r.to_string(),
            };
            format!(
                "{}({args}) = {result} <{}>",
                c.syscall,
                human_ns(c.duration_ns)
            )
        }
        // strace -c's columns, one row per syscall and container.
        EventData::SyscallSummary(s) => format!(
            "{:<16} calls {:>8} errors {:>6} total {:>8} avg {:>8} p99 {:>8}",
            s.syscall,
            s.calls,
            s.errors,
            human_ns(s.total_ns),
            human_ns(s.avg_ns),
            human_ns(s.p99_ns)
        ),
        // perf's layout: the name, then FIELD=VALUE in the format's order.
        EventData::Tracepoint(t) => {
            let mut s = t.tracepoint.clone();
            for (k, v) in &t.fields.0 {
                s.push(' ');
                s.push_str(k);
                s.push('=');
                s.push_str(&v.to_string());
            }
            if t.truncated {
                s.push_str(" (truncated)");
            }
            s
        }
        EventData::Dns(d) => {
            let mut s = format!(
                "{} {} {} {} {}",
                d.role,
                d.qtype,
                d.name,
                d.rcode.as_deref().unwrap_or("-"),
                d.latency_ns.map_or("-".to_string(), human_ns)
            );
            if !d.answers.is_empty() {
                s.push_str(&format!(" [{}]", d.answers.join(", ")));
            }
            if d.transport == "tcp" || d.transport == "tls" {
                s.push_str(&format!(" over {}", d.transport));
            }
            if d.dport != 0 {
                s.push_str(&format!(" peer {}:{}", d.daddr, d.dport));
                s.push_str(&peer_pod(&d.peer_namespace, &d.peer_pod));
                s.push_str(&dialed(&d.family, &d.dialed_addr, d.dialed_port));
            }
            if let Some(e) = &d.error {
                s.push_str(&format!(" ERROR {e}"));
            }
            s
        }
        // pwru's order: the packet, where it is, how long since its last
        // stage and its first, then the flow.
        EventData::NetPacket(p) => {
            let mut s = format!(
                "#{} {:<10} {:<12} +{} (total {}) {}",
                p.packet,
                p.stage,
                if p.ifname.is_empty() { "-" } else { &p.ifname },
                human_ns(p.step_ns),
                human_ns(p.total_ns),
                flow_text(&p.protocol, &p.family, &p.saddr, p.sport, &p.daddr, p.dport)
            );
            if !p.tcp_flags.is_empty() {
                s.push_str(&format!(" [{}]", p.tcp_flags));
            }
            s.push_str(&format!(" len {}", p.ip_len));
            if let Some(r) = &p.reason {
                s.push_str(&format!(" DROP {r}"));
            }
            if let Some(l) = &p.location {
                s.push_str(&format!(" at {l}"));
            }
            s
        }
        EventData::NetFlow(f) => {
            let mut s = format!(
                "{} packets {} bytes {} drops {} e2e p50 {} p99 {}",
                flow_text(&f.protocol, &f.family, &f.saddr, f.sport, &f.daddr, f.dport),
                f.packets,
                f.bytes,
                f.drops,
                human_ns(f.end_to_end_p50_ns),
                human_ns(f.end_to_end_p99_ns)
            );
            for st in &f.stages {
                s.push_str(&format!(
                    " | {} {} +{}/{}",
                    st.stage,
                    st.packets,
                    human_ns(st.step_p50_ns),
                    human_ns(st.step_p99_ns)
                ));
            }
            s
        }
        // dropwatch's "where" first, then the flow and who it was found by.
        EventData::Drop(d) => {
            let mut s = format!("{} at {}", d.reason, d.location);
            if d.family.is_empty() {
                s.push_str(&format!(" ethertype {:#06x}", d.ethertype));
            } else {
                let ep = |a: &str, p: u16| {
                    let a = if d.family == "ipv6" {
                        format!("[{a}]")
                    } else {
                        a.to_string()
                    };
                    if p == 0 {
                        a
                    } else {
                        format!("{a}:{p}")
                    }
                };
                s.push_str(&format!(
                    " {} {} -> {}",
                    d.protocol,
                    ep(&d.saddr, d.sport),
                    ep(&d.daddr, d.dport)
                ));
                if !d.tcp_flags.is_empty() {
                    s.push_str(&format!(" [{}]", d.tcp_flags));
                }
            }
            s.push_str(&format!(" len {}", d.len));
            if !d.ifname.is_empty() {
                s.push_str(&format!(" dev {}", d.ifname));
            }
            s.push_str(&format!(" netns {} by {}", d.netns, d.attributed_by));
            s
        }
        // Raw socket data reaches a sink only where no parser stage runs;
        // the payload is never shown.
        EventData::SockData(d) => format!(
            "{} {} {} fd {} sock {:#x} {}:{} {} {}:{}",
            d.direction,
            d.syscall,
            human_bytes(d.len as u64),
            d.fd,
            d.sock,
            d.saddr,
            d.sport,
            if d.direction == "tx" { "->" } else { "<-" },
            d.daddr,
            d.dport
        ),
    }
}

/// ` (shop/web-0)` after a peer address that is a known pod's.
fn peer_pod(ns: &str, pod: &str) -> String {
    match (ns.is_empty(), pod.is_empty()) {
        (_, true) => String::new(),
        (true, false) => format!(" ({pod})"),
        (false, false) => format!(" ({ns}/{pod})"),
    }
}

/// `server GET /a?q=? 200 1.2ms req 78B resp 612B peer 10.0.0.7:51234 (shop/web-0)`
/// ` via 10.96.0.10:53`: the address dialed, when NAT sent the connection to
/// the peer shown.
fn dialed(family: &str, addr: &str, port: u16) -> String {
    match (
        addr.is_empty(),
        family == "ipv6" && !addr.starts_with("::ffff:"),
    ) {
        (true, _) => String::new(),
        (false, true) => format!(" via [{addr}]:{port}"),
        (false, false) => format!(" via {addr}:{port}"),
    }
}

fn http_details(h: &podscope_model::HttpEvent) -> String {
    let mut peer = if h.family == "ipv6" {
        format!("[{}]:{}", h.daddr, h.dport)
    } else {
        format!("{}:{}", h.daddr, h.dport)
    };
    peer.push_str(&peer_pod(&h.peer_namespace, &h.peer_pod));
    peer.push_str(&dialed(&h.family, &h.dialed_addr, h.dialed_port));
    if h.kind == "parse_error" {
        let e = h.error.as_deref().unwrap_or("");
        let what = if e.starts_with("http2:") {
            "bad HTTP/2"
        } else {
            "not HTTP/1.x"
        };
        return format!("{what}: {e} peer {peer}");
    }
    let method = if h.method.is_empty() { "-" } else { &h.method };
    let path = if h.path.is_empty() { "-" } else { &h.path };
    let status = h.status.map_or("-".to_string(), |s| s.to_string());
    let what = match &h.rpc {
        // `grpc demo.Echo/Say NOT_FOUND(5)`: the call, then HTTP's status.
        Some(r) => format!(
            "{} {}/{} {}",
            r.system,
            if r.service.is_empty() {
                "-"
            } else {
                &r.service
            },
            if r.method.is_empty() { "-" } else { &r.method },
            r.status.map_or("-".to_string(), |c| format!(
                "{}({c})",
                podscope_model::grpc_code_name(c)
            )),
        ),
        None => format!("{method} {path}"),
    };
    let mut s = format!(
        "{} {what} {status} {} req {} resp {} peer {peer}",
        h.role,
        human_ns(h.duration_ns),
        human_bytes(h.request_bytes),
        human_bytes(h.response_bytes),
    );
    if h.tls {
        s.push_str(" tls");
    }
    if h.version == "HTTP/2" {
        s.push_str(" h2");
    }
    if let Some(m) = h.rpc.as_ref().and_then(|r| r.message.as_ref()) {
        s.push_str(&format!(" message {m:?}"));
    }
    if h.truncated {
        s.push_str(" (head truncated)");
    }
    if let Some(e) = &h.error {
        s.push_str(&format!(" ERROR {e}"));
    }
    s
}

/// Aligned columns, kubectl style.
#[derive(Debug)]
pub struct Columns<W: Write> {
    out: W,
    header_done: bool,
}

impl<W: Write> Columns<W> {
    pub fn new(out: W) -> Self {
        Columns {
            out,
            header_done: false,
        }
    }

    fn header(&mut self) -> io::Result<()> {
        if !self.header_done {
            self.header_done = true;
            writeln!(self.out, "{}", header_line(false))?;
        }
        Ok(())
    }
}

/// The column header; with `node`, a NODE column after the time (a trace
/// through the hub, whose events come from many nodes).
pub fn header_line(node: bool) -> String {
    if node {
        format!(
            "{:<12} {:<10} {:<6} {:<14} {:>7} {:<16} DETAILS",
            "TIME(UTC)", "NODE", "PROBE", "EVENT", "PID", "COMM"
        )
    } else {
        format!(
            "{:<12} {:<6} {:<14} {:>7} {:<16} DETAILS",
            "TIME(UTC)", "PROBE", "EVENT", "PID", "COMM"
        )
    }
}

/// One event as a line of columns, the same for a local trace and one
/// through the hub (which adds the NODE column).
pub fn event_line(ev: &Event, node: bool) -> String {
    let who = if ev.identity.pod.is_empty() {
        String::new()
    } else {
        format!(
            " [{}/{}/{}]",
            ev.identity.namespace, ev.identity.pod, ev.identity.container
        )
    };
    let node = if node {
        format!(" {:<10}", ev.identity.node)
    } else {
        String::new()
    };
    format!(
        "{:<12}{node} {:<6} {:<14} {:>7} {:<16} {}{who}",
        clock(ev.timestamp),
        ev.probe().name(),
        ev.kind(),
        ev.pid,
        ev.comm,
        details(ev)
    )
}

impl<W: Write> Sink for Columns<W> {
    fn event(&mut self, ev: &Event) -> io::Result<()> {
        self.header()?;
        writeln!(self.out, "{}", event_line(ev, false))
    }

    fn lost(&mut self, probe: ProbeKind, delta: u64, total: u64) -> io::Result<()> {
        self.header()?;
        writeln!(
            self.out,
            "{:<12} {:<6} {:<14} {:>7} {:<16} {delta} events lost (kernel ring, tracking map or user-space queue full), {total} in total; the summary says which",
            clock(Timestamp::now()),
            probe.name(),
            "LOST",
            "-",
            "-"
        )
    }

    fn summary(&mut self, elapsed_ns: u64, stats: &[ProbeStats]) -> io::Result<()> {
        self.out.flush()?;
        // The summary goes to stderr so `podscope trace ... > file` keeps only events.
        eprint!("{}", summary_text(elapsed_ns, stats));
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// The end-of-trace table, shared by both formats (JSON prints it to stderr too).
pub fn summary_text(elapsed_ns: u64, stats: &[ProbeStats]) -> String {
    let events: u64 = stats.iter().map(|s| s.events).sum();
    let lost: u64 = stats.iter().map(|s| s.total_lost()).sum();
    let mut s = format!(
        "\npodscope: traced for {}: {events} events, {lost} lost\n",
        human_ns(elapsed_ns)
    );
    s.push_str(&format!(
        "{:<7} {:>10} {:>10} {:>10} {:>10}\n",
        "PROBE", "EVENTS", "RING_LOST", "MAP_FULL", "QUEUE_FULL"
    ));
    for st in stats {
        s.push_str(&format!(
            "{:<7} {:>10} {:>10} {:>10} {:>10}\n",
            st.probe.name(),
            st.events,
            st.lost + st.decode_errors,
            st.map_full,
            st.queue_full
        ));
    }
    // Say which hand-off overflowed and what would help.
    let sum = |f: fn(&ProbeStats) -> u64| stats.iter().map(f).sum::<u64>();
    if sum(|s| s.lost) > 0 {
        s.push_str(
            "RING_LOST: the kernel ring was full (the drain thread did not get to run in time); \
             a longer --ring-budget or a larger --ring-buffer-size holds more\n",
        );
    }
    if sum(|s| s.map_full) > 0 {
        s.push_str(
            "MAP_FULL: an in-kernel tracking map was full (too many operations in flight)\n",
        );
    }
    if sum(|s| s.queue_full) > 0 {
        s.push_str(
            "QUEUE_FULL: read from the kernel, then dropped: the user-space queue was full \
             because decoding, enrichment or the output fell behind for longer than it holds\n",
        );
    }
    s
}

/// One JSON object per line.
#[derive(Debug)]
pub struct JsonLines<W: Write> {
    out: W,
}

impl<W: Write> JsonLines<W> {
    pub fn new(out: W) -> Self {
        JsonLines { out }
    }

    fn line<T: Serialize>(&mut self, v: &T) -> io::Result<()> {
        serde_json::to_writer(&mut self.out, v)?;
        self.out.write_all(b"\n")
    }
}

#[derive(Serialize)]
struct LostRecord {
    timestamp: Timestamp,
    probe: ProbeKind,
    kind: &'static str,
    lost: u64,
    lost_total: u64,
}

#[derive(Serialize)]
struct SummaryProbe {
    probe: ProbeKind,
    events: u64,
    lost: u64,
    map_full: u64,
    queue_full: u64,
}

#[derive(Serialize)]
struct SummaryRecord {
    timestamp: Timestamp,
    kind: &'static str,
    duration_ns: u64,
    events: u64,
    lost: u64,
    probes: Vec<SummaryProbe>,
}

/// The JSON `lost` record (docs/json-schema.md).
pub fn lost_record(probe: ProbeKind, delta: u64, total: u64) -> serde_json::Value {
    serde_json::to_value(LostRecord {
        timestamp: Timestamp::now(),
        probe,
        kind: "lost",
        lost: delta,
        lost_total: total,
    })
    .unwrap_or_default()
}

/// The JSON `summary` record (docs/json-schema.md).
pub fn summary_record(elapsed_ns: u64, stats: &[ProbeStats]) -> serde_json::Value {
    serde_json::to_value(SummaryRecord {
        timestamp: Timestamp::now(),
        kind: "summary",
        duration_ns: elapsed_ns,
        events: stats.iter().map(|s| s.events).sum(),
        lost: stats.iter().map(|s| s.total_lost()).sum(),
        probes: stats
            .iter()
            .map(|s| SummaryProbe {
                probe: s.probe,
                events: s.events,
                lost: s.lost + s.decode_errors,
                map_full: s.map_full,
                queue_full: s.queue_full,
            })
            .collect(),
    })
    .unwrap_or_default()
}

impl<W: Write> Sink for JsonLines<W> {
    fn event(&mut self, ev: &Event) -> io::Result<()> {
        self.line(ev)
    }

    fn lost(&mut self, probe: ProbeKind, delta: u64, total: u64) -> io::Result<()> {
        self.line(&lost_record(probe, delta, total))
    }

    fn summary(&mut self, elapsed_ns: u64, stats: &[ProbeStats]) -> io::Result<()> {
        self.line(&summary_record(elapsed_ns, stats))?;
        self.out.flush()?;
        eprint!("{}", summary_text(elapsed_ns, stats));
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_calls_show_service_method_and_status() {
        let mut h = podscope_model::HttpEvent {
            dialed_addr: String::new(),
            dialed_port: 0,
            stream_id: 0,
            kind: "request".into(),
            role: "client".into(),
            version: "HTTP/2".into(),
            method: "POST".into(),
            path: "/demo.Echo/Missing".into(),
            host: String::new(),
            status: Some(200),
            duration_ns: 1_500_000,
            request_bytes: 120,
            response_bytes: 80,
            tls: false,
            truncated: false,
            family: "ipv4".into(),
            saddr: "127.0.0.1".into(),
            sport: 40000,
            daddr: "127.0.1.9".into(),
            dport: 50051,
            peer_namespace: String::new(),
            peer_pod: String::new(),
            error: None,
            trace_context: None,
            capture: None,
            rpc: Some(podscope_model::RpcInfo {
                system: "grpc".into(),
                service: "demo.Echo".into(),
                method: "Missing".into(),
                status: Some(5),
                message: Some("no such key".into()),
            }),
        };
        assert_eq!(
            http_details(&h),
            "client grpc demo.Echo/Missing NOT_FOUND(5) 200 1.5ms req 120B resp 80B \
             peer 127.0.1.9:50051 h2 message \"no such key\""
        );
        h.rpc = None;
        assert_eq!(
            http_details(&h),
            "client POST /demo.Echo/Missing 200 1.5ms req 120B resp 80B peer 127.0.1.9:50051 h2"
        );
        // NAT sent the connection to the peer shown.
        (h.peer_namespace, h.peer_pod) = ("shop".into(), "api-1".into());
        (h.dialed_addr, h.dialed_port) = ("10.96.0.7".into(), 80);
        assert_eq!(
            http_details(&h),
            "client POST /demo.Echo/Missing 200 1.5ms req 120B resp 80B \
             peer 127.0.1.9:50051 (shop/api-1) via 10.96.0.7:80 h2"
        );
    }

    #[test]
    fn net_packets_and_flows_show_stage_times_and_flow() {
        let p = podscope_model::NetPacketEvent {
            kind: "packet".into(),
            packet: 7,
            skb: "0xffff888100de7700".into(),
            stage: "veth_recv".into(),
            ifname: "veth1234".into(),
            ifindex: 9,
            netns: 4026531833,
            len: 60,
            first: false,
            step_ns: 2_500,
            total_ns: 9_000,
            protocol: "tcp".into(),
            family: "ipv4".into(),
            saddr: "10.88.94.2".into(),
            daddr: "10.88.94.3".into(),
            sport: 41000,
            dport: 80,
            tcp_flags: "SYN".into(),
            ip_len: 60,
            reason: None,
            location: None,
        };
        let ev = |data: EventData| Event {
            timestamp: podscope_model::Timestamp(0),
            identity: Default::default(),
            pid: 0,
            tid: 0,
            uid: 0,
            comm: String::new(),
            cgroup_id: 0,
            data,
        };
        assert_eq!(
            details(&ev(EventData::NetPacket(Box::new(p.clone())))),
            format!(
                "#7 veth_recv  veth1234     +{} (total {}) tcp 10.88.94.2:41000 -> 10.88.94.3:80 [SYN] len 60",
                human_ns(2_500),
                human_ns(9_000)
            )
        );
        let f = podscope_model::NetFlowEvent {
            kind: "flow".into(),
            protocol: "udp".into(),
            family: "ipv6".into(),
            saddr: "fd00::1".into(),
            daddr: "fd00::2".into(),
            sport: 5353,
            dport: 53,
            packets: 3,
            bytes: 300,
            drops: 1,
            duration_ns: 1_000,
            end_to_end_p50_ns: 4095,
            end_to_end_p99_ns: 8191,
            stages: vec![podscope_model::NetStage {
                stage: "pod_queue".into(),
                packets: 3,
                step_p50_ns: 1,
                step_p99_ns: 1,
                total_p50_ns: 1,
                total_p99_ns: 1,
            }],
        };
        let line = details(&ev(EventData::NetFlow(f)));
        assert!(
            line.starts_with(
                "udp [fd00::1]:5353 -> [fd00::2]:53 packets 3 bytes 300 drops 1 e2e p50 "
            ),
            "{line}"
        );
        assert!(
            line.ends_with(&format!(" | pod_queue 3 +{}/{}", human_ns(1), human_ns(1))),
            "{line}"
        );
    }

    #[test]
    fn drops_show_reason_location_flow_and_attribution() {
        let mut d = podscope_model::DropEvent {
            kind: "drop".into(),
            reason: "NO_SOCKET".into(),
            reason_code: Some(3),
            location: "tcp_v4_rcv+0x99".into(),
            attributed_by: "netns".into(),
            netns: 4026532691,
            ifname: "lo".into(),
            ifindex: 1,
            protocol: "tcp".into(),
            family: "ipv4".into(),
            saddr: "127.0.0.1".into(),
            daddr: "127.0.0.1".into(),
            sport: 44964,
            dport: 39122,
            tcp_flags: "SYN".into(),
            len: 40,
            ethertype: 0x800,
        };
        let ev = |d: &podscope_model::DropEvent| Event {
            timestamp: podscope_model::Timestamp(0),
            identity: Default::default(),
            pid: 0,
            tid: 0,
            uid: 0,
            comm: String::new(),
            cgroup_id: 0,
            data: EventData::Drop(Box::new(d.clone())),
        };
        assert_eq!(
            details(&ev(&d)),
            "NO_SOCKET at tcp_v4_rcv+0x99 tcp 127.0.0.1:44964 -> 127.0.0.1:39122 [SYN] len 40 \
             dev lo netns 4026532691 by netns"
        );
        d.family = "ipv6".into();
        d.protocol = "icmpv6".into();
        d.saddr = "fe80::1".into();
        d.daddr = "ff02::16".into();
        (d.sport, d.dport) = (0, 0);
        d.tcp_flags.clear();
        assert!(details(&ev(&d)).contains("icmpv6 [fe80::1] -> [ff02::16] len 40"));
        d.family.clear();
        d.ifname.clear();
        d.ethertype = 0;
        d.reason = "QUEUE_PURGE".into();
        assert_eq!(
            details(&ev(&d)),
            "QUEUE_PURGE at tcp_v4_rcv+0x99 ethertype 0x0000 len 40 netns 4026532691 by netns"
        );
    }

    #[test]
    fn units() {
        assert_eq!(human_bytes(512), "512B");
        assert_eq!(human_bytes(4096), "4.0KiB");
        assert_eq!(human_ns(1_500_000), "1.5ms");
        assert_eq!(human_ns(2_000_000_000), "2.00s");
    }

    #[test]
    fn lost_and_summary_json() {
        let mut buf = Vec::new();
        {
            let mut j = JsonLines::new(&mut buf);
            j.lost(ProbeKind::Exec, 3, 5).unwrap();
            let stats = [ProbeStats {
                probe: ProbeKind::Exec,
                events: 10,
                lost: 5,
                map_full: 0,
                decode_errors: 0,
                queue_full: 0,
            }];
            j.summary(1_000, &stats).unwrap();
        }
        let text = String::from_utf8(buf).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines[0]["kind"], "lost");
        assert_eq!(lines[0]["probe"], "exec");
        assert_eq!(lines[0]["lost"], 3);
        assert_eq!(lines[1]["kind"], "summary");
        assert_eq!(lines[1]["probes"][0]["lost"], 5);
        assert_eq!(lines[1]["events"], 10);
    }
}
