//! `podscope-bench record-http OUT -- CMD [ARGS...]`: runs CMD in a cgroup of
//! its own under the http probe (16 KiB copied per call) and writes every
//! raw socket record of CMD and its children, payload included, to OUT in
//! the format of the parsers' regression corpus
//! (crates/podscope-proto/tests/corpus/, replayed by tests/corpus.rs).
//! A developer's tool, not part of podscope: OUT holds payload bytes, so
//! record only test servers' traffic (scripts/record-corpus.sh).

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use podscope_model::{Event, EventData, ProbeKind, SockDataKind};

/// One record as a corpus line: time (ns after the first record), pid,
/// socket, kind, protocol, tls, direction, syscall, len, seq, family,
/// local address and port, peer address and port, payload (hex; `-` when
/// none). Fields never hold spaces.
pub fn line(first_ns: u64, e: &Event) -> Option<String> {
    let EventData::SockData(d) = &e.data else {
        return None;
    };
    let kind = match d.kind {
        SockDataKind::Data => "data",
        SockDataKind::Close => "close",
    };
    let dash = |s: &str| {
        if s.is_empty() {
            "-".to_string()
        } else {
            s.to_string()
        }
    };
    let payload: String = if d.payload.is_empty() {
        "-".into()
    } else {
        d.payload.iter().map(|b| format!("{b:02x}")).collect()
    };
    Some(format!(
        "{} {} {:x} {kind} {} {} {} {} {} {} {} {} {} {} {} {payload}",
        e.timestamp.0.saturating_sub(first_ns),
        e.pid,
        d.sock,
        d.protocol,
        u8::from(d.tls),
        dash(&d.direction),
        d.syscall,
        d.len,
        d.seq,
        d.family,
        dash(&d.saddr),
        d.sport,
        dash(&d.daddr),
        d.dport,
    ))
}

struct Cg(PathBuf);

impl Drop for Cg {
    fn drop(&mut self) {
        for _ in 0..50 {
            if std::fs::remove_dir(&self.0).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

pub fn record(args: &[String]) -> Result<()> {
    let (out, cmd) = match args {
        [out, sep, cmd @ ..] if sep == "--" && !cmd.is_empty() => (Path::new(out), cmd),
        _ => bail!("usage: podscope-bench record-http OUT -- CMD [ARGS...]"),
    };
    let cg = Cg(podscope_pipeline::cgroup::v2_mount()?
        .join(format!("podscope-record-{}", std::process::id())));
    std::fs::create_dir(&cg.0)
        .with_context(|| format!("creating {} (needs root and cgroup v2)", cg.0.display()))?;
    let id = std::fs::metadata(&cg.0)?.ino();
    let opts = podscope_bpf::TraceOptions {
        probes: vec![ProbeKind::Http],
        filter: podscope_bpf::Filter {
            cgroups: Some(vec![id]),
            ..Default::default()
        },
        http_capture_bytes: podscope_bpf::HTTP_MAX_CAPTURE_BYTES,
        ..Default::default()
    };
    let mut tracer = podscope_bpf::Tracer::new(&opts).context("loading the http probe")?;
    // The shell joins the cgroup, then becomes CMD.
    let join = format!("echo $$ > {}/cgroup.procs && exec \"$@\"", cg.0.display());
    let mut child = Command::new("/bin/sh")
        .args(["-c", &join, "sh"])
        .args(cmd)
        .spawn()
        .with_context(|| format!("starting {cmd:?}"))?;
    let mut events = Vec::new();
    let status = loop {
        tracer.poll(Duration::from_millis(50), &mut events)?;
        if let Some(s) = child.try_wait()? {
            break s;
        }
    };
    // What is still in the rings.
    let t = Instant::now();
    while t.elapsed() < Duration::from_millis(500) {
        tracer.poll(Duration::from_millis(50), &mut events)?;
    }
    let lost: u64 = tracer.stats().iter().map(|s| s.total_lost()).sum();
    if std::env::var_os("RECORD_DEBUG").is_some() {
        eprintln!(
            "record-http: {} events, stats {:?}",
            events.len(),
            tracer.stats()
        );
    }
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    if lost > 0 {
        bail!("{lost} records were lost: the corpus would have holes; record again");
    }
    let first = events
        .iter()
        .filter(|e| matches!(e.data, EventData::SockData(_)))
        .map(|e| e.timestamp.0)
        .min()
        .unwrap_or(0);
    let mut f = std::io::BufWriter::new(
        std::fs::File::create(out).with_context(|| format!("creating {}", out.display()))?,
    );
    let mut n = 0;
    for e in &events {
        if let Some(l) = line(first, e) {
            writeln!(f, "{l}")?;
            n += 1;
        }
    }
    f.flush()?;
    eprintln!("record-http: {n} records of {cmd:?} in {}", out.display());
    Ok(())
}
