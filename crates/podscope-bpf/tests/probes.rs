//! Real probes, real kernel events: each test loads BPF programs, makes the
//! kernel do something known, and checks what comes out. Needs root.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::OpenOptionsExt;
use std::time::Duration;

use common::*;
use podscope_bpf::{Filter, TraceOptions};
use podscope_model::{EventData, ProbeKind, TcpKind};

fn opts(probes: &[ProbeKind], filter: Filter) -> TraceOptions {
    TraceOptions {
        probes: probes.to_vec(),
        filter,
        ..TraceOptions::default()
    }
}

#[test]
fn exec_of_a_unique_program_reports_exact_args_ppid_and_cgroup() {
    if !require_root() {
        return;
    }
    let mut t = tracer(opts(&[ProbeKind::Exec], Filter::default()));
    let prog = unique_program("uniqexec");
    let args = ["first arg", "--flag=1", "", "last"];
    let status = std::process::Command::new(&prog)
        .args(args)
        .status()
        .unwrap();
    assert!(status.success());
    let failed = std::process::Command::new("/nonexistent/podscope-no-such-prog").status();
    assert!(failed.is_err());

    let prog_s = prog.to_str().unwrap().to_string();
    let events = collect_until(&mut t, Duration::from_secs(5), 2, |e| match &e.data {
        EventData::Exec(x) => x.filename == prog_s || x.filename.contains("podscope-no-such-prog"),
        _ => false,
    });
    let ok: Vec<_> = events
        .iter()
        .filter(|e| matches!(&e.data, EventData::Exec(x) if x.filename == prog_s))
        .collect();
    assert_eq!(ok.len(), 1, "exactly one exec event for {prog_s}: {ok:?}");
    let ev = ok[0];
    let EventData::Exec(x) = &ev.data else {
        unreachable!()
    };
    let mut want = vec![prog_s.clone()];
    want.extend(args.iter().map(|s| s.to_string()));
    assert_eq!(x.args, want);
    assert_eq!(x.retval, 0);
    assert!(!x.args_truncated);
    assert_eq!(x.ppid, std::process::id(), "parent is the test process");
    assert_ne!(ev.cgroup_id, 0);
    assert_eq!(
        ev.comm,
        prog.file_name().unwrap().to_str().unwrap()[..15.min(prog.file_name().unwrap().len())]
    );

    let failed: Vec<_> = events
        .iter()
        .filter_map(|e| match &e.data {
            EventData::Exec(x) if x.filename == "/nonexistent/podscope-no-such-prog" => Some(x),
            _ => None,
        })
        .collect();
    assert_eq!(failed.len(), 1, "the failed exec is reported too");
    assert_eq!(failed[0].retval, -2);
    assert_eq!(failed[0].error.as_deref(), Some("ENOENT"));
    std::fs::remove_dir_all(prog.parent().unwrap()).ok();
}

#[test]
fn tcp_connect_accept_close_with_exact_bytes() {
    if !require_root() {
        return;
    }
    let mut o = opts(&[ProbeKind::Tcp], Filter::default());
    o.exclude_self = false;
    let mut t = tracer(o);

    const N: usize = 100_000; // client -> server
    const M: usize = 4_321; // server -> client
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).unwrap();
        s.write_all(&vec![7u8; M]).unwrap();
        buf.len()
    });
    let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let client_port = c.local_addr().unwrap().port();
    c.write_all(&vec![1u8; N]).unwrap();
    c.shutdown(std::net::Shutdown::Write).unwrap();
    let mut back = Vec::new();
    c.read_to_end(&mut back).unwrap();
    drop(c);
    assert_eq!(server.join().unwrap(), N);
    assert_eq!(back.len(), M);

    let mine = |e: &podscope_model::Event| match &e.data {
        EventData::Tcp(x) => {
            (x.sport == port && x.dport == client_port)
                || (x.sport == client_port && x.dport == port)
        }
        _ => false,
    };
    let events = collect_until(&mut t, Duration::from_secs(5), 4, mine);
    let tcp: Vec<_> = events
        .iter()
        .filter(|e| mine(e))
        .map(|e| match &e.data {
            EventData::Tcp(x) => (e, x),
            _ => unreachable!(),
        })
        .collect();
    let find = |kind: TcpKind, role: &str| {
        let v: Vec<_> = tcp
            .iter()
            .filter(|(_, x)| x.kind == kind && x.role == role)
            .collect();
        assert_eq!(v.len(), 1, "one {kind:?}/{role} event, got {tcp:#?}");
        *v[0]
    };
    let (ce, connect) = find(TcpKind::Connect, "client");
    assert_eq!((connect.sport, connect.dport), (client_port, port));
    assert_eq!(connect.daddr, "127.0.0.1");
    assert_eq!(ce.pid, std::process::id());
    let (_, accept) = find(TcpKind::Accept, "server");
    assert_eq!((accept.sport, accept.dport), (port, client_port));
    let (_, cclose) = find(TcpKind::Close, "client");
    assert_eq!(
        (cclose.tx_bytes, cclose.rx_bytes),
        (Some(N as u64), Some(M as u64))
    );
    assert_eq!((cclose.sport, cclose.dport), (client_port, port));
    assert!(cclose.duration_ns.unwrap() > 0);
    let (_, sclose) = find(TcpKind::Close, "server");
    assert_eq!(
        (sclose.tx_bytes, sclose.rx_bytes),
        (Some(M as u64), Some(N as u64))
    );
}

#[test]
fn tcp_refused_connect_is_reported_failed() {
    if !require_root() {
        return;
    }
    let mut o = opts(&[ProbeKind::Tcp], Filter::default());
    o.exclude_self = false;
    let mut t = tracer(o);
    // A port nobody listens on: bind, note the port, close.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
    let is_fail = |e: &podscope_model::Event| matches!(&e.data, EventData::Tcp(x) if x.kind == TcpKind::ConnectFailed && x.dport == port);
    let events = collect_until(&mut t, Duration::from_secs(5), 1, is_fail);
    let ev = events
        .iter()
        .find(|e| is_fail(e))
        .expect("a connect_failed event");
    let EventData::Tcp(x) = &ev.data else {
        unreachable!()
    };
    assert_eq!(x.error.as_deref(), Some("ECONNREFUSED"));
    assert_eq!(ev.pid, std::process::id());
}

#[test]
fn odirect_write_yields_bio_event_with_bytes_and_latency() {
    if !require_root() {
        return;
    }
    let mut o = opts(&[ProbeKind::Bio], Filter::default());
    o.exclude_self = false;
    let mut t = tracer(o);
    // /var/tmp is on the real disk (tmpfs would never reach the block layer).
    let dir = std::path::Path::new("/var/tmp").join(unique("podscope-bio-"));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("data");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(libc::O_DIRECT)
        .open(&path)
        .unwrap();
    let mut buf = vec![0x5au8; 8192];
    let off = buf.as_ptr().align_offset(4096);
    f.write_all(&buf[off..off + 4096]).unwrap();
    f.sync_all().unwrap();
    buf.clear();
    let me = std::process::id();
    let is_mine = |e: &podscope_model::Event| {
        e.pid == me && matches!(&e.data, EventData::Bio(b) if b.op == "write" && b.bytes == 4096)
    };
    let events = collect_until(&mut t, Duration::from_secs(5), 1, is_mine);
    let ev = events
        .iter()
        .find(|e| is_mine(e))
        .expect("a 4 KiB write bio event from this process");
    let EventData::Bio(b) = &ev.data else {
        unreachable!()
    };
    assert!(b.latency_ns > 0);
    assert!(!b.disk.is_empty());
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn open_reports_path_and_errno() {
    if !require_root() {
        return;
    }
    let mut o = opts(&[ProbeKind::Open], Filter::default());
    o.exclude_self = false;
    let mut t = tracer(o);
    let missing = format!("/nonexistent/{}", unique("podscope-open-"));
    assert!(std::fs::File::open(&missing).is_err());
    let present = unique_program("opened");
    std::fs::File::open(&present).unwrap();
    let present_s = present.to_str().unwrap().to_string();
    let hit = |e: &podscope_model::Event| matches!(&e.data, EventData::Open(o) if o.path == missing || o.path == present_s);
    let events = collect_until(&mut t, Duration::from_secs(5), 2, hit);
    let opens: Vec<_> = events
        .iter()
        .filter_map(|e| match &e.data {
            EventData::Open(o) if hit(e) => Some(o),
            _ => None,
        })
        .collect();
    let m = opens
        .iter()
        .find(|o| o.path == missing)
        .expect("open of the missing file");
    assert_eq!(m.errno, Some(2));
    assert_eq!(m.error.as_deref(), Some("ENOENT"));
    assert_eq!(m.fd, None);
    // (copying the program opened it for writing first)
    let p = opens
        .iter()
        .find(|o| o.path == present_s && o.flags & 3 == 0)
        .expect("read-only open of the existing file");
    assert!(p.fd.unwrap() >= 0);
    assert!(
        p.flags_str.starts_with("O_RDONLY|O_CLOEXEC"),
        "{}",
        p.flags_str
    );
    std::fs::remove_dir_all(present.parent().unwrap()).ok();
}

#[test]
fn cgroup_filter_admits_inside_and_drops_outside() {
    if !require_root() {
        return;
    }
    let cg = TestCgroup::new();
    let mut t = tracer(opts(
        &[ProbeKind::Exec],
        Filter {
            cgroups: Some(vec![cg.id()]),
            ..Filter::default()
        },
    ));
    let inside = unique_program("inside");
    let outside = unique_program("outside");
    assert!(cg.run(&format!("{} in", inside.display())).success());
    assert!(run_in(None, &format!("{} out", outside.display())).success());
    // The same program outside the cgroup too.
    assert!(run_in(None, &format!("{} again", inside.display())).success());
    let events = collect_until(&mut t, Duration::from_secs(3), usize::MAX, |_| false);
    let names: Vec<(String, Vec<String>, u64)> = events
        .iter()
        .filter_map(|e| match &e.data {
            EventData::Exec(x) => Some((x.filename.clone(), x.args.clone(), e.cgroup_id)),
            _ => None,
        })
        .collect();
    let ins: Vec<_> = names
        .iter()
        .filter(|n| n.0 == inside.to_str().unwrap())
        .collect();
    assert_eq!(ins.len(), 1, "only the run inside the cgroup: {names:?}");
    assert_eq!(ins[0].1.last().unwrap(), "in");
    assert_eq!(ins[0].2, cg.id());
    assert!(
        names.iter().all(|n| n.2 == cg.id()),
        "nothing from outside the cgroup gets through: {names:?}"
    );
}

#[test]
fn lost_events_are_counted_and_add_up() {
    if !require_root() {
        return;
    }
    const EXECS: u64 = 400;
    let cg = TestCgroup::new();
    // The smallest ring (one page) and no polling during the storm: it overflows.
    let mut t = tracer(TraceOptions {
        probes: vec![ProbeKind::Exec],
        filter: Filter {
            cgroups: Some(vec![cg.id()]),
            ..Filter::default()
        },
        ring_buffer_bytes: 4096,
        ..TraceOptions::default()
    });
    // One exec for the inner shell, then EXECS of /bin/true, all inside the cgroup.
    let script =
        format!("exec /bin/sh -c 'i=0; while [ $i -lt {EXECS} ]; do /bin/true; i=$((i+1)); done'");
    assert!(cg.run(&script).success());
    let events = collect_until(&mut t, Duration::from_secs(1), usize::MAX, |_| false);
    let mut all = events;
    t.flush(&mut all).unwrap();
    let stats = t.stats();
    let s = stats[0];
    assert!(
        s.lost > 0,
        "a one-page ring must overflow during a {EXECS}-exec storm: {s:?}"
    );
    assert_eq!(s.events, all.len() as u64);
    assert_eq!(
        s.events + s.total_lost(),
        EXECS + 1,
        "captured + lost = generated: {s:?}"
    );
}

#[test]
fn cache_counts_misses_then_hits_for_a_file_read_twice() {
    if !require_root() {
        return;
    }
    use std::io::Read;
    use std::os::fd::AsRawFd;
    const PAGES: u64 = 1024; // 4 MiB
    let mut o = opts(&[ProbeKind::Cache], Filter::default());
    o.exclude_self = false;
    o.interval = Duration::from_millis(200);
    let mut t = tracer(o);
    let dir = std::path::Path::new("/var/tmp").join(unique("podscope-cache-"));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("data");
    std::fs::write(&path, vec![3u8; (PAGES * 4096) as usize]).unwrap();
    let f = std::fs::File::open(&path).unwrap();
    f.sync_all().unwrap();
    // Drop the file's clean pages so the first read must miss.
    // SAFETY: a valid fd; fadvise only gives the kernel advice.
    let rc = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    assert_eq!(rc, 0);
    let me = std::process::id();
    let read_all = || {
        let mut buf = Vec::new();
        std::fs::File::open(&path)
            .unwrap()
            .read_to_end(&mut buf)
            .unwrap();
        assert_eq!(buf.len() as u64, PAGES * 4096);
    };
    let totals = |t: &mut podscope_bpf::Tracer| {
        let evs = collect_until(t, Duration::from_millis(700), usize::MAX, |_| false);
        evs.iter()
            .filter(|e| e.pid == me)
            .filter_map(|e| match &e.data {
                EventData::Cache(c) => Some((c.hits, c.misses, c.method.clone())),
                _ => None,
            })
            .fold((0, 0, String::new()), |a, b| (a.0 + b.0, a.1 + b.1, b.2))
    };
    totals(&mut t); // whatever the set-up did
    read_all();
    let (hits1, misses1, method) = totals(&mut t);
    read_all();
    let (hits2, misses2, _) = totals(&mut t);
    eprintln!("cache ({method}): cold read hits {hits1} misses {misses1}; warm read hits {hits2} misses {misses2}");
    assert!(!method.is_empty());
    assert!(
        misses1 >= PAGES * 9 / 10,
        "a cold read misses ~{PAGES} pages: {misses1}"
    );
    assert!(hits1 <= PAGES / 10, "a cold read barely hits: {hits1}");
    assert!(
        misses2 <= PAGES / 20,
        "a warm read barely misses: {misses2}"
    );
    assert!(
        hits2 >= PAGES * 9 / 10,
        "a warm read hits ~{PAGES} pages: {hits2}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn tcp_over_ipv6_reports_v6_addresses() {
    if !require_root() {
        return;
    }
    let mut o = opts(&[ProbeKind::Tcp], Filter::default());
    o.exclude_self = false;
    let mut t = tracer(o);
    let listener = match TcpListener::bind("[::1]:0") {
        Ok(l) => l,
        Err(e) => panic!("IPv6 loopback is needed for this test: {e}"),
    };
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).unwrap();
        buf.len()
    });
    let mut c = TcpStream::connect(("::1", port)).unwrap();
    c.write_all(&[9u8; 777]).unwrap();
    drop(c);
    assert_eq!(server.join().unwrap(), 777);
    let mine = |e: &podscope_model::Event| matches!(&e.data, EventData::Tcp(x) if x.family == "ipv6" && (x.dport == port || x.sport == port));
    let events = collect_until(&mut t, Duration::from_secs(5), 4, mine);
    let v6: Vec<_> = events
        .iter()
        .filter_map(|e| match &e.data {
            EventData::Tcp(x) if mine(e) => Some(x),
            _ => None,
        })
        .collect();
    let connect = v6
        .iter()
        .find(|x| x.kind == TcpKind::Connect)
        .expect("an IPv6 connect");
    assert_eq!(
        (connect.saddr.as_str(), connect.daddr.as_str()),
        ("::1", "::1")
    );
    let close = v6
        .iter()
        .find(|x| x.kind == TcpKind::Close && x.role == "client")
        .expect("the client's close");
    assert_eq!(close.tx_bytes, Some(777));
    assert!(
        v6.iter().any(|x| x.kind == TcpKind::Accept),
        "the accept: {v6:?}"
    );
}
