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

/// Every process, the test's own included (its events are the ones checked).
fn own_tracer(probes: &[ProbeKind]) -> podscope_bpf::Tracer {
    let mut o = opts(probes, Filter::default());
    o.exclude_self = false;
    tracer(o)
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
    let mut t = own_tracer(&[ProbeKind::Tcp]);

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
    let mut t = own_tracer(&[ProbeKind::Tcp]);
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
    let mut t = own_tracer(&[ProbeKind::Bio]);
    // A real block device (tmpfs, or a guest's 9p root, never reaches one).
    let fs = ScratchFs::new(64);
    let path = fs.dir.join("data");
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
    // The other bio tests run in this process at the same time, each on a
    // loop device of its own: this test's write is the one on its device.
    let me = std::process::id();
    let disk = fs.device.name().to_string();
    let is_mine = |e: &podscope_model::Event| {
        e.pid == me
            && matches!(&e.data, EventData::Bio(b) if b.op == "write" && b.bytes == 4096 && b.disk == disk)
    };
    let events = collect_until(&mut t, Duration::from_secs(5), 1, is_mine);
    let ev = events
        .iter()
        .find(|e| is_mine(e))
        .unwrap_or_else(|| panic!("no 4 KiB write bio event from this process on {disk}"));
    let EventData::Bio(b) = &ev.data else {
        unreachable!()
    };
    assert!(b.latency_ns > 0);
}

#[test]
fn open_reports_path_and_errno() {
    if !require_root() {
        return;
    }
    let mut t = own_tracer(&[ProbeKind::Open]);
    let missing = format!("/nonexistent/{}", unique("podscope-open-"));
    assert!(std::fs::File::open(&missing).is_err());
    let present = unique_program("opened");
    std::fs::File::open(&present).unwrap();
    let present_s = present.to_str().unwrap().to_string();
    let hit = |e: &podscope_model::Event| matches!(&e.data, EventData::Open(o) if o.path == missing || o.path == present_s);
    // Three opens of these paths: the missing one, and the present one twice
    // (std::fs::copy writes it, then the read-only open). Wait for all
    // three: the drain thread hands records over every few ms, so a poll can
    // return after the first two (seen on the TCG guests).
    let events = collect_until(&mut t, Duration::from_secs(5), 3, hit);
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
    let mut t = tracer(cg.options(&[ProbeKind::Exec]));
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
    // The smallest ring (one page), the smallest user-space queue (one page)
    // and no polling during the storm: records overflow one or the other
    // (the drain thread empties the ring as it fills, so mostly the queue).
    let mut t = tracer(TraceOptions {
        ring_buffer_bytes: 4096,
        queue_bytes: 4096,
        ..cg.options(&[ProbeKind::Exec])
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
        s.lost + s.queue_full > 0,
        "a one-page ring and queue must overflow during a {EXECS}-exec storm: {s:?}"
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
    let fs = ScratchFs::new(64);
    let path = fs.dir.join("data");
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
    drop(f);
    drop(fs);
}

#[test]
fn tcp_over_ipv6_reports_v6_addresses() {
    if !require_root() {
        return;
    }
    let mut t = own_tracer(&[ProbeKind::Tcp]);
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

fn tcp_events_of(events: &[podscope_model::Event], port: u16) -> Vec<podscope_model::TcpEvent> {
    events
        .iter()
        .filter_map(|e| match &e.data {
            EventData::Tcp(x) if x.sport == port || x.dport == port => Some(x.clone()),
            _ => None,
        })
        .collect()
}

fn close_of<'a>(tcp: &'a [podscope_model::TcpEvent], role: &str) -> &'a podscope_model::TcpEvent {
    let v: Vec<_> = tcp
        .iter()
        .filter(|x| x.kind == TcpKind::Close && x.role == role)
        .collect();
    assert_eq!(v.len(), 1, "one {role} close: {tcp:#?}");
    v[0]
}

/// Regression (issue 15): bytes a server reads with splice(2), as splicing
/// proxies do, were missing from rx_bytes; sendfile(2) writes are counted too.
#[test]
fn tcp_bytes_count_splice_reads_and_sendfile_writes() {
    if !require_root() {
        return;
    }
    use std::os::fd::AsRawFd;
    let mut t = own_tracer(&[ProbeKind::Tcp]);
    const K: usize = 300_000; // client -> server, spliced
    const F: usize = 123_457; // server -> client, sendfile
    let file_path = std::env::temp_dir().join(unique("podscope-sendfile-"));
    std::fs::write(&file_path, vec![4u8; F]).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let fp = file_path.clone();
    let server = std::thread::spawn(move || {
        let (s, _) = listener.accept().unwrap();
        let mut pipe = [0i32; 2];
        // SAFETY: a valid two-int array for pipe(2).
        assert_eq!(unsafe { libc::pipe(pipe.as_mut_ptr()) }, 0);
        let null = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/null")
            .unwrap();
        let mut total = 0usize;
        loop {
            // SAFETY: valid fds; null offsets mean "current position".
            let n = unsafe {
                libc::splice(
                    s.as_raw_fd(),
                    std::ptr::null_mut(),
                    pipe[1],
                    std::ptr::null_mut(),
                    65536,
                    0,
                )
            };
            assert!(
                n >= 0,
                "splice from the socket: {}",
                std::io::Error::last_os_error()
            );
            if n == 0 {
                break;
            }
            total += n as usize;
            let mut left = n as usize;
            while left > 0 {
                // SAFETY: as above.
                let m = unsafe {
                    libc::splice(
                        pipe[0],
                        std::ptr::null_mut(),
                        null.as_raw_fd(),
                        std::ptr::null_mut(),
                        left,
                        0,
                    )
                };
                assert!(m > 0);
                left -= m as usize;
            }
        }
        let f = std::fs::File::open(&fp).unwrap();
        let mut sent = 0usize;
        while sent < F {
            // SAFETY: valid fds; a null offset uses the file position.
            let n = unsafe {
                libc::sendfile(s.as_raw_fd(), f.as_raw_fd(), std::ptr::null_mut(), F - sent)
            };
            assert!(n > 0, "sendfile: {}", std::io::Error::last_os_error());
            sent += n as usize;
        }
        // SAFETY: closing the pipe fds we created.
        unsafe {
            libc::close(pipe[0]);
            libc::close(pipe[1]);
        }
        total
    });
    let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
    c.write_all(&vec![1u8; K]).unwrap();
    c.shutdown(std::net::Shutdown::Write).unwrap();
    let mut back = Vec::new();
    c.read_to_end(&mut back).unwrap();
    drop(c);
    assert_eq!(server.join().unwrap(), K, "the server spliced everything");
    assert_eq!(back.len(), F);
    std::fs::remove_file(&file_path).ok();
    let events = collect_until(
        &mut t,
        Duration::from_secs(5),
        2,
        |e| matches!(&e.data, EventData::Tcp(x) if x.kind == TcpKind::Close && (x.sport == port || x.dport == port)),
    );
    let tcp = tcp_events_of(&events, port);
    let server = close_of(&tcp, "server");
    assert_eq!(
        (server.rx_bytes, server.tx_bytes),
        (Some(K as u64), Some(F as u64)),
        "spliced reads and sendfile writes"
    );
    let client = close_of(&tcp, "client");
    assert_eq!(
        (client.tx_bytes, client.rx_bytes),
        (Some(K as u64), Some(F as u64))
    );
}

/// A server that closes with data still unread (the kernel answers with a
/// reset): rx_bytes is what it read, and the client's tx_bytes what it wrote.
#[test]
fn tcp_bytes_when_closed_with_unread_data() {
    if !require_root() {
        return;
    }
    let mut t = own_tracer(&[ProbeKind::Tcp]);
    const SENT: usize = 50_000;
    const READ: usize = 1_000;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        rx.recv().unwrap(); // everything is queued by now
        let mut buf = vec![0u8; READ];
        s.read_exact(&mut buf).unwrap();
        drop(s); // unread data left: RST, no FIN
    });
    let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
    c.write_all(&vec![2u8; SENT]).unwrap();
    tx.send(()).unwrap();
    server.join().unwrap();
    let mut rest = Vec::new();
    let _ = c.read_to_end(&mut rest); // ECONNRESET
    drop(c);
    let events = collect_until(
        &mut t,
        Duration::from_secs(5),
        2,
        |e| matches!(&e.data, EventData::Tcp(x) if x.kind == TcpKind::Close && (x.sport == port || x.dport == port)),
    );
    let tcp = tcp_events_of(&events, port);
    let server = close_of(&tcp, "server");
    assert_eq!(
        (server.rx_bytes, server.tx_bytes),
        (Some(READ as u64), Some(0))
    );
    let client = close_of(&tcp, "client");
    assert_eq!(
        (client.tx_bytes, client.rx_bytes),
        (Some(SENT as u64), Some(0))
    );
}

/// Every bio implementation this kernel can run, each alone.
fn bio_implementations() -> Vec<&'static str> {
    ProbeKind::Bio
        .implementations()
        .iter()
        .filter(|i| podscope_bpf::implementation_support(i).is_ok())
        .map(|i| i.name)
        .collect()
}

fn bio_tracer(implementation: &str) -> podscope_bpf::Tracer {
    let mut o = opts(&[ProbeKind::Bio], Filter::default());
    o.exclude_self = false;
    o.implementations = vec![(ProbeKind::Bio, implementation.to_string())];
    let t = tracer(o);
    assert_eq!(t.implementations()[0].1.name, implementation);
    t
}

/// Regression (issue 15): requests went missing with no loss reported.
/// Every request the device's own stat file counts must come out as an
/// event, with the same bytes, for every implementation.
#[test]
fn bio_accounts_for_every_request_the_disk_counts() {
    if !require_root() {
        return;
    }
    let imps = bio_implementations();
    assert!(!imps.is_empty(), "no bio implementation runs here");
    for imp in imps {
        let dev = LoopDevice::new(256);
        let name = dev.name();
        let mut t = bio_tracer(imp);
        let before = dev.stat();
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_DIRECT)
            .open(&dev.dev)
            .unwrap();
        // Large writes the block layer splits, small ones it may merge, a read.
        let big = Aligned::new(4 << 20, 0x11);
        for _ in 0..8 {
            f.write_all(big.bytes()).unwrap();
        }
        let small = Aligned::new(4096, 0x22);
        for _ in 0..64 {
            f.write_all(small.bytes()).unwrap();
        }
        use std::io::Seek;
        f.seek(std::io::SeekFrom::Start(0)).unwrap();
        let mut back = Aligned::new(1 << 20, 0);
        // SAFETY: reading into our own aligned buffer of that length.
        let n = unsafe {
            use std::os::fd::AsRawFd;
            libc::read(
                f.as_raw_fd(),
                back.bytes().as_ptr() as *mut libc::c_void,
                1 << 20,
            )
        };
        assert_eq!(n, 1 << 20);
        let _ = &mut back;
        drop(f);
        let after = dev.stat();
        let (writes, wsect) = (after[4] - before[4], after[6] - before[6]);
        let (reads, rsect) = (after[0] - before[0], after[2] - before[2]);
        let on_dev =
            |e: &podscope_model::Event| matches!(&e.data, EventData::Bio(b) if b.disk == name);
        let events = collect_until(
            &mut t,
            Duration::from_secs(5),
            (writes + reads) as usize,
            on_dev,
        );
        let mut all = events;
        t.flush(&mut all).unwrap();
        let bios: Vec<_> = all
            .iter()
            .filter_map(|e| match &e.data {
                EventData::Bio(b) if b.disk == name => Some((e.pid, b.clone())),
                _ => None,
            })
            .collect();
        let count = |op: &str| bios.iter().filter(|(_, b)| b.op == op).count() as u64;
        let bytes = |op: &str| {
            bios.iter()
                .filter(|(_, b)| b.op == op)
                .map(|(_, b)| b.bytes as u64)
                .sum::<u64>()
        };
        let stats = t.stats()[0];
        eprintln!(
            "bio ({imp}): disk counted {writes} writes ({wsect} sectors), {reads} reads; events: {} writes ({} bytes), {} reads; lost {}",
            count("write"), bytes("write"), count("read"), stats.total_lost()
        );
        assert_eq!(stats.total_lost(), 0, "{imp}: nothing lost: {stats:?}");
        assert_eq!(
            (count("write"), bytes("write")),
            (writes, wsect * 512),
            "{imp}: writes"
        );
        assert_eq!(
            (count("read"), bytes("read")),
            (reads, rsect * 512),
            "{imp}: reads"
        );
        let me = std::process::id();
        assert!(
            bios.iter().all(|(pid, _)| *pid == me),
            "{imp}: every request is the test's own: {:?}",
            bios.iter().map(|(p, b)| (p, &b.op)).collect::<Vec<_>>()
        );
    }
}

/// Regression (issue 15): the flush an O_DSYNC write causes came out as a
/// 0-byte write (the PREFLUSH flag was read at completion, once cleared).
#[test]
fn bio_o_dsync_write_yields_a_flush() {
    if !require_root() {
        return;
    }
    for imp in bio_implementations() {
        let dev = LoopDevice::new(64);
        let name = dev.name();
        let mut t = bio_tracer(imp);
        let before = dev.stat();
        const N: u64 = 5;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_DSYNC)
            .open(&dev.dev)
            .unwrap();
        for _ in 0..N {
            f.write_all(&[7u8; 4096]).unwrap();
        }
        drop(f);
        let after = dev.stat();
        let mine = |e: &podscope_model::Event| matches!(&e.data, EventData::Bio(b) if b.disk == name && b.op == "flush");
        let events = collect_until(&mut t, Duration::from_secs(5), N as usize, mine);
        let me = std::process::id();
        let ops: Vec<(String, u32, u32)> = events
            .iter()
            .filter_map(|e| match &e.data {
                EventData::Bio(b) if b.disk == name => Some((b.op.clone(), b.bytes, e.pid)),
                _ => None,
            })
            .collect();
        eprintln!("bio ({imp}) O_DSYNC: {ops:?}");
        let flushes = ops
            .iter()
            .filter(|(op, _, pid)| op == "flush" && *pid == me)
            .count() as u64;
        assert_eq!(flushes, N, "{imp}: one flush per O_DSYNC write: {ops:?}");
        assert!(
            !ops.iter()
                .any(|(op, bytes, _)| op == "write" && *bytes == 0),
            "{imp}: no 0-byte writes: {ops:?}"
        );
        if after.len() > 15 {
            assert_eq!(
                after[15] - before[15],
                N,
                "{imp}: the disk counted {N} flushes"
            );
        }
    }
}

#[test]
fn asking_for_an_unknown_implementation_names_the_real_ones() {
    if !require_root() {
        return;
    }
    let mut o = opts(&[ProbeKind::Bio], Filter::default());
    o.implementations = vec![(ProbeKind::Bio, "kprobes".into())];
    let err = podscope_bpf::Tracer::new(&o).unwrap_err().to_string();
    assert!(
        err.contains("no implementation 'kprobes'") && err.contains("block_io_start, block_getrq"),
        "{err}"
    );
}

#[test]
fn exit_reports_code_signal_and_lifetime() {
    if !require_root() {
        return;
    }
    use std::os::unix::process::ExitStatusExt;
    let mut t = own_tracer(&[ProbeKind::Exit]);
    let coded = std::process::Command::new("/bin/sh")
        .args(["-c", "exit 3"])
        .spawn()
        .unwrap();
    let coded_pid = coded.id();
    let mut coded = coded;
    assert_eq!(coded.wait().unwrap().code(), Some(3));
    let mut killed = std::process::Command::new("/bin/sleep")
        .arg("30")
        .spawn()
        .unwrap();
    let killed_pid = killed.id();
    std::thread::sleep(Duration::from_millis(50));
    killed.kill().unwrap();
    assert_eq!(killed.wait().unwrap().signal(), Some(libc::SIGKILL));
    let pids = [coded_pid, killed_pid];
    let events = collect_until(&mut t, Duration::from_secs(5), 2, |e| {
        matches!(&e.data, EventData::Exit(_)) && pids.contains(&e.pid)
    });
    let exit_of = |pid: u32| {
        events
            .iter()
            .find_map(|e| match &e.data {
                EventData::Exit(x) if e.pid == pid => Some(x.clone()),
                _ => None,
            })
            .unwrap_or_else(|| panic!("an exit event for pid {pid}"))
    };
    let c = exit_of(coded_pid);
    assert_eq!((c.exit_code, c.signal), (Some(3), None));
    assert_eq!(c.ppid, std::process::id());
    assert!(c.lifetime_ns > 0);
    let k = exit_of(killed_pid);
    assert_eq!((k.exit_code, k.signal), (None, Some(libc::SIGKILL)));
    assert!(
        k.lifetime_ns >= 50_000_000,
        "slept 50 ms before the kill: {k:?}"
    );
}

#[test]
fn http_copies_first_bytes_of_socket_messages_and_only_counts_other_protocols() {
    if !require_root() {
        return;
    }
    use podscope_model::{SockDataEvent, SockDataKind};
    use std::io::IoSlice;
    let mut t = own_tracer(&[ProbeKind::Http]);

    let request = b"GET /probe?x=1 HTTP/1.1\r\nHost: test\r\n\r\n".to_vec();
    let head = b"HTTP/1.1 200 OK\r\nContent-Length: 3000\r\n\r\n".to_vec();
    let body = vec![b'z'; 3000];
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (h, b) = (head.clone(), body.clone());
    let server = std::thread::spawn(move || {
        // An HTTP exchange, then a connection with another protocol.
        let (mut s, _) = listener.accept().unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while !got.ends_with(b"\r\n\r\n") {
            let n = s.read(&mut buf).unwrap();
            got.extend_from_slice(&buf[..n]);
        }
        // writev: the head in the first iovec, the body in the second.
        let mut n = s
            .write_vectored(&[IoSlice::new(&h), IoSlice::new(&b)])
            .unwrap();
        if n < h.len() + b.len() {
            let all = [h.clone(), b.clone()].concat();
            s.write_all(&all[n..]).unwrap();
            n = all.len();
        }
        assert_eq!(n, h.len() + b.len());
        let (mut o, _) = listener.accept().unwrap();
        let mut other = Vec::new();
        o.read_to_end(&mut other).unwrap();
        other.len()
    });
    let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let client_port = c.local_addr().unwrap().port();
    c.write_all(&request).unwrap();
    let mut back = Vec::new();
    let mut buf = [0u8; 8192];
    while back.len() < head.len() + body.len() {
        let n = c.read(&mut buf).unwrap();
        assert!(n > 0);
        back.extend_from_slice(&buf[..n]);
    }
    drop(c);
    let mut o = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let other_port = o.local_addr().unwrap().port();
    for _ in 0..10 {
        o.write_all(b"hello, this is not HTTP\n").unwrap();
    }
    drop(o);
    assert_eq!(server.join().unwrap(), 240);

    let ports = |d: &SockDataEvent, a: u16, b: u16| {
        (d.sport == a && d.dport == b) || (d.sport == b && d.dport == a)
    };
    let mine = |e: &podscope_model::Event| matches!(&e.data, EventData::SockData(d) if ports(d, port, client_port));
    // request tx + rx, response tx + rx (>= 1 read), the client's close.
    let events = collect_until(&mut t, Duration::from_secs(5), 5, mine);
    let data: Vec<&SockDataEvent> = events
        .iter()
        .filter_map(|e| match &e.data {
            EventData::SockData(d) => Some(d),
            _ => None,
        })
        .collect();
    assert!(
        !data.iter().any(|d| ports(d, port, other_port)),
        "a non-HTTP connection's payload was copied: {:?}",
        data.iter()
            .filter(|d| ports(d, port, other_port))
            .collect::<Vec<_>>()
    );
    let of = |sport: u16, dir: &str| -> Vec<&SockDataEvent> {
        data.iter()
            .copied()
            .filter(|d| {
                d.kind == SockDataKind::Data
                    && d.sport == sport
                    && d.direction == dir
                    && ports(d, port, client_port)
            })
            .collect()
    };
    // The client's send(): all of it, at offset 0.
    let sent = of(client_port, "tx");
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].payload, request);
    assert_eq!((sent[0].len as usize, sent[0].seq), (request.len(), 0));
    assert_eq!(sent[0].syscall, "sendto");
    assert_eq!(sent[0].daddr, "127.0.0.1");
    // The server's reads put the request together again.
    let got: Vec<u8> = of(port, "rx")
        .iter()
        .flat_map(|d| d.payload.clone())
        .collect();
    assert_eq!(got, request);
    // writev: the iovecs are gathered in order up to the capture (1 KiB),
    // the length is all of it.
    let resp = of(port, "tx");
    assert_eq!(resp[0].syscall, "writev");
    let gathered: Vec<u8> = head.iter().chain(body.iter()).copied().collect();
    assert_eq!(resp[0].payload, gathered[..gathered.len().min(1024)]);
    assert_eq!(
        resp.iter().map(|d| d.len as usize).sum::<usize>(),
        head.len() + body.len()
    );
    // The client's reads: at most 1 KiB captured each, offsets contiguous.
    let reads = of(client_port, "rx");
    let mut seq = 0;
    for r in &reads {
        assert_eq!(r.seq, seq, "{reads:?}");
        assert!(r.payload.len() <= 1024 && r.payload.len() <= r.len as usize);
        seq += r.len as u64;
    }
    assert_eq!(seq as usize, head.len() + body.len());
    assert!(reads[0].payload.starts_with(&head[..head.len().min(1024)]));
    let closes: Vec<_> = data
        .iter()
        .filter(|d| d.kind == SockDataKind::Close && d.sport == client_port)
        .collect();
    assert_eq!(closes.len(), 1, "{data:?}");
    let st = t.stats();
    assert_eq!(
        st[0].lost + st[0].map_full + st[0].decode_errors,
        0,
        "{st:?}"
    );
    // Both ends of the other connection were sniffed and only counted (the
    // tracer sees every process, so at least those).
    let counters = t.counters();
    let get = |name: &str| counters.iter().find(|c| c.1 == name).map_or(0, |c| c.2);
    assert!(get("connections_not_http") >= 2, "{counters:?}");
    assert!(get("bytes_not_http") >= 2 * 240, "{counters:?}");
}

#[test]
fn dns_copies_messages_on_port_53_sockets_only() {
    if !require_root() {
        return;
    }
    use podscope_model::SockDataEvent;
    use std::net::{Ipv4Addr, UdpSocket};
    let mut t = own_tracer(&[ProbeKind::Dns]);
    let ip = (100..250)
        .map(|i| Ipv4Addr::new(127, 0, 0, i))
        .find(|ip| UdpSocket::bind((*ip, 53)).is_ok())
        .expect("a free port 53 on 127.0.0.100-249");
    let server = UdpSocket::bind((ip, 53)).unwrap();
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client.connect((ip, 53)).unwrap();
    let client_port = client.local_addr().unwrap().port();
    // A query for example.test/A and a one-answer response.
    let query =
        b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x07example\x04test\x00\x00\x01\x00\x01"
            .to_vec();
    let mut answer = query.clone();
    answer[2] = 0x81;
    answer[3] = 0x80;
    answer[7] = 1;
    answer.extend_from_slice(b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x04\x0a\x01\x02\x03");
    client.send(&query).unwrap();
    let mut buf = [0u8; 512];
    let (n, from) = server.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], &query[..]);
    server.send_to(&answer, from).unwrap();
    let n = client.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], &answer[..]);
    // Not port 53: nothing copied.
    let a = UdpSocket::bind("127.0.0.1:0").unwrap();
    let b = UdpSocket::bind("127.0.0.1:0").unwrap();
    a.connect(b.local_addr().unwrap()).unwrap();
    a.send(&query).unwrap();
    b.recv(&mut buf).unwrap();
    let other = a.local_addr().unwrap().port();

    let dns = |e: &podscope_model::Event| matches!(&e.data, EventData::SockData(d) if d.protocol == "dns");
    let events = collect_until(&mut t, Duration::from_secs(5), 4, |e| {
        dns(e) && e.pid == std::process::id()
    });
    let mine: Vec<&SockDataEvent> = events
        .iter()
        .filter(|e| e.pid == std::process::id())
        .filter_map(|e| match &e.data {
            EventData::SockData(d) if d.protocol == "dns" => Some(d),
            _ => None,
        })
        .collect();
    assert!(
        !mine.iter().any(|d| d.sport == other || d.dport == other),
        "a non-DNS socket was copied: {mine:?}"
    );
    let find = |sport: u16, dir: &str| -> &SockDataEvent {
        let v: Vec<_> = mine
            .iter()
            .filter(|d| d.sport == sport && d.direction == dir)
            .collect();
        assert_eq!(v.len(), 1, "{sport} {dir}: {mine:?}");
        v[0]
    };
    let q = find(client_port, "tx");
    assert_eq!(
        (q.payload.clone(), q.len as usize),
        (query.clone(), query.len())
    );
    assert_eq!((q.daddr.clone(), q.dport), (ip.to_string(), 53));
    assert_eq!(find(53, "rx").payload, query);
    assert_eq!(find(53, "tx").payload, answer);
    assert_eq!(find(client_port, "rx").payload, answer);
}

#[test]
fn dns_copies_tcp_streams_on_port_53_as_they_were_read_and_written() {
    if !require_root() {
        return;
    }
    use podscope_model::SockDataEvent;
    use std::io::{IoSlice, Read, Write};
    use std::net::{Ipv4Addr, TcpListener, TcpStream};
    let mut t = own_tracer(&[ProbeKind::Dns]);
    let ip = (100..250)
        .map(|i| Ipv4Addr::new(127, 0, 0, i))
        .find(|ip| TcpListener::bind((*ip, 53)).is_ok())
        .expect("a free TCP port 53 on 127.0.0.100-249");
    let listener = TcpListener::bind((ip, 53)).unwrap();
    let query =
        b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x07example\x04test\x00\x00\x01\x00\x01"
            .to_vec();
    let len = (query.len() as u16).to_be_bytes();
    let mut client = TcpStream::connect((ip, 53)).unwrap();
    let client_port = client.local_addr().unwrap().port();
    let (mut server, _) = listener.accept().unwrap();
    // glibc's way: the length and the message as two iovecs of one writev.
    let n = client
        .write_vectored(&[IoSlice::new(&len), IoSlice::new(&query)])
        .unwrap();
    assert_eq!(n, 2 + query.len());
    // dnsmasq's way: the length one byte at a time, then the message.
    let mut one = [0u8; 1];
    server.read_exact(&mut one).unwrap();
    server.read_exact(&mut one).unwrap();
    let mut got = vec![0u8; query.len()];
    server.read_exact(&mut got).unwrap();
    assert_eq!(got, query);
    // Not port 53: nothing copied.
    let other = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut a = TcpStream::connect(other.local_addr().unwrap()).unwrap();
    let (mut b, _) = other.accept().unwrap();
    a.write_all(&query).unwrap();
    b.read_exact(&mut got).unwrap();
    let other_port = a.local_addr().unwrap().port();

    let mine = |e: &podscope_model::Event| {
        e.pid == std::process::id()
            && matches!(&e.data, EventData::SockData(d) if d.protocol == "dns-tcp")
    };
    let events = collect_until(&mut t, Duration::from_secs(5), 4, mine);
    let mine: Vec<&SockDataEvent> = events
        .iter()
        .filter(|e| mine(e))
        .filter_map(|e| match &e.data {
            EventData::SockData(d) => Some(d),
            _ => None,
        })
        .collect();
    assert!(
        !mine
            .iter()
            .any(|d| d.sport == other_port || d.dport == other_port),
        "a non-DNS socket was copied: {mine:?}"
    );
    let sent: Vec<_> = mine.iter().filter(|d| d.sport == client_port).collect();
    assert_eq!(sent.len(), 1, "{mine:?}");
    assert_eq!(
        (sent[0].syscall.as_ref(), sent[0].direction.as_ref()),
        ("writev", "tx")
    );
    assert_eq!(
        sent[0].payload,
        [&len[..], &query].concat(),
        "both iovecs, in order"
    );
    assert_eq!((sent[0].daddr.clone(), sent[0].dport), (ip.to_string(), 53));
    let read: Vec<&[u8]> = mine
        .iter()
        .filter(|d| d.sport == 53 && d.direction == "rx")
        .map(|d| &d.payload[..])
        .collect();
    assert_eq!(
        read,
        [&len[..1], &len[1..], &query[..]],
        "each read as it was"
    );
    drop(server);
}

/// Two sockets of one process talking over TCP: 1 MiB each way at once,
/// each side receiving exactly what the other sent; prints "RECEIVED_BY_SERVER
/// RECEIVED_BY_CLIENT INTACT" into the file given.
const ACCEL_PAIR_PY: &str = r#"
import os, socket, sys, threading
addr, n, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
srv = socket.socket()
srv.bind((addr, 0))
srv.listen(1)
c = socket.create_connection((addr, srv.getsockname()[1]))
s, _ = srv.accept()
data = os.urandom(n)
back = data[::-1]
def exactly(sock, k):
    got = bytearray()
    while len(got) < k:
        b = sock.recv(min(65536, k - len(got)))
        if not b:
            break
        got += b
    return bytes(got)
senders = [threading.Thread(target=c.sendall, args=(data,)),
           threading.Thread(target=s.sendall, args=(back,))]
for t in senders: t.start()
at_server = exactly(s, n)
at_client = exactly(c, n)
for t in senders: t.join()
with open(out, "w") as f:
    f.write(f"{len(at_server)} {len(at_client)} {int(at_server == data and at_client == back)}\n")
"#;

/// Takes the lo address and the accel pins away, whatever the test did.
struct AccelGuard(&'static str);

impl Drop for AccelGuard {
    fn drop(&mut self) {
        let _ = podscope_bpf::accel_disable();
        let _ = std::process::Command::new("ip")
            .args(["addr", "del", self.0, "dev", "lo"])
            .status();
    }
}

/// accelerate (sockops + sk_msg on a sockhash) on this kernel, without
/// pods: a scratch cgroup is the "pod", an address added to lo (not
/// 127/8, which accel leaves alone) is its "pod IP". Both ends of a
/// connection inside it join the sockhash, their messages are redirected
/// peer to peer, the bytes arrive intact, and the counters say exactly the
/// bytes the process sent (redirected + passed = 2 MiB).
#[test]
fn accel_redirects_a_selected_cgroups_connection_and_counts_its_bytes() {
    if !require_root() {
        return;
    }
    use std::net::IpAddr;
    const N: usize = 1 << 20;
    const ADDR: &str = "10.250.77.1";
    let _ = podscope_bpf::accel_disable();
    let ok = std::process::Command::new("ip")
        .args(["addr", "replace", "10.250.77.1/32", "dev", "lo"])
        .status()
        .unwrap()
        .success();
    assert!(ok, "ip addr replace {ADDR}/32 dev lo");
    let _guard = AccelGuard("10.250.77.1/32");
    let cg = TestCgroup::new();
    let sel = podscope_bpf::AccelSelection {
        cgroups: vec![cg.id()],
        addrs: vec![(ADDR.parse::<IpAddr>().unwrap(), cg.id(), true)],
        preexisting: 0,
    };
    let how = podscope_bpf::accel_enable(&sel, &v2_root())
        .unwrap_or_else(|e| panic!("accel_enable on this kernel: {e}"));
    assert_eq!(how, podscope_bpf::AccelEnabled::Attached);
    let dir = std::env::temp_dir().join(unique("podscope-accel-"));
    std::fs::create_dir_all(&dir).unwrap();
    let script = dir.join("pair.py");
    std::fs::write(&script, ACCEL_PAIR_PY).unwrap();
    let out = dir.join("out");
    let st = cg.run(&format!(
        "exec /usr/bin/python3 {} {ADDR} {N} {}",
        script.display(),
        out.display()
    ));
    assert!(st.success(), "the socket pair: {st}");
    let said = std::fs::read_to_string(&out).unwrap();
    assert_eq!(said.trim(), format!("{N} {N} 1"), "both ways, byte-exact");
    let status = podscope_bpf::accel_status().unwrap().expect("accel is on");
    let (pod, _) = status.pod(cg.id());
    eprintln!("accel: {pod:?}");
    assert_eq!(pod.sockets, 2, "both ends joined the sockhash: {status:?}");
    assert_eq!(pod.accelerated, 1, "{status:?}");
    assert!(pod.messages > 0, "messages were redirected: {status:?}");
    assert_eq!(
        pod.bytes + pod.passed_bytes,
        2 * N as u64,
        "every byte sent, redirected or passed: {status:?}"
    );
    assert_eq!(status.counter("left_alone_loopback"), 0, "{status:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The kernel's own counters of a network namespace (/proc/thread-self/net/snmp).
fn snmp_counter(group: &str, field: &str) -> u64 {
    let text = std::fs::read_to_string("/proc/thread-self/net/snmp").unwrap();
    let prefix = format!("{group}:");
    let rows: Vec<&str> = text.lines().filter(|l| l.starts_with(&prefix)).collect();
    let names: Vec<&str> = rows[0].split_whitespace().collect();
    let vals: Vec<&str> = rows[1].split_whitespace().collect();
    let i = names.iter().position(|n| *n == field).unwrap();
    vals[i].parse().unwrap()
}

/// In a network namespace of its own (a thread's: no other traffic), N
/// datagrams to a closed UDP port and N connects to a closed TCP port: the
/// drop probe reports exactly N of each, as the netns's UdpNoPorts and
/// OutRsts count them, with the flow, the netns, a named location, and
/// NO_SOCKET where the kernel has drop reasons (5.17+; `unknown` before).
#[test]
fn drop_of_datagrams_and_syns_to_closed_ports() {
    if !require_root() {
        return;
    }
    const N: usize = 6;
    let mut t = own_tracer(&[ProbeKind::Drop]);
    let (udp_port, tcp_port) = (39161u16, 39162u16);
    let (netns, noports, rsts) = std::thread::spawn(move || {
        // SAFETY: unshare(2) with a plain flag; it changes this thread only.
        assert_eq!(unsafe { libc::unshare(libc::CLONE_NEWNET) }, 0, "unshare");
        let st = std::process::Command::new("ip")
            .args(["link", "set", "lo", "up"])
            .status()
            .unwrap();
        assert!(st.success());
        use std::os::unix::fs::MetadataExt;
        let netns = std::fs::metadata("/proc/thread-self/ns/net").unwrap().ino();
        let (u0, r0) = (
            snmp_counter("Udp", "NoPorts"),
            snmp_counter("Tcp", "OutRsts"),
        );
        for _ in 0..N {
            let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            s.send_to(b"x", ("127.0.0.1", udp_port)).unwrap();
        }
        for _ in 0..N {
            let e = TcpStream::connect(("127.0.0.1", tcp_port)).unwrap_err();
            assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused);
        }
        (
            netns,
            snmp_counter("Udp", "NoPorts") - u0,
            snmp_counter("Tcp", "OutRsts") - r0,
        )
    })
    .join()
    .unwrap();
    assert_eq!((noports, rsts), (N as u64, N as u64));
    let ours = |e: &podscope_model::Event| matches!(&e.data, EventData::Drop(d) if u64::from(d.netns) == netns);
    let events = collect_until(&mut t, Duration::from_secs(10), 2 * N, ours);
    let drops: Vec<&podscope_model::DropEvent> = events
        .iter()
        .filter(|e| ours(e))
        .map(|e| match &e.data {
            EventData::Drop(d) => d.as_ref(),
            _ => unreachable!(),
        })
        .collect();
    let with_reasons = std::fs::read_to_string("/sys/kernel/tracing/events/skb/kfree_skb/format")
        .or_else(|_| {
            std::fs::read_to_string("/sys/kernel/debug/tracing/events/skb/kfree_skb/format")
        })
        .unwrap()
        .contains("reason");
    let udp: Vec<_> = drops
        .iter()
        .filter(|d| d.protocol == "udp" && d.dport == udp_port)
        .collect();
    let tcp: Vec<_> = drops
        .iter()
        .filter(|d| d.protocol == "tcp" && d.dport == tcp_port)
        .collect();
    assert_eq!((udp.len(), tcp.len()), (N, N), "{drops:#?}");
    for d in udp.iter().chain(&tcp) {
        assert_eq!(
            d.reason,
            if with_reasons { "NO_SOCKET" } else { "unknown" },
            "{d:?}"
        );
        assert_eq!(
            (d.saddr.as_str(), d.daddr.as_str()),
            ("127.0.0.1", "127.0.0.1")
        );
        assert_eq!((d.family.as_str(), d.ifname.as_str()), ("ipv4", "lo"));
        assert!(!d.location.starts_with("0x"), "location not named: {d:?}");
    }
    for d in &tcp {
        assert_eq!(d.tcp_flags, "SYN", "{d:?}");
    }
    eprintln!(
        "drop: {} udp at {}, {} tcp at {} (reason {})",
        udp.len(),
        udp[0].location,
        tcp.len(),
        tcp[0].location,
        udp[0].reason
    );
}

/// In a network namespace of its own (a thread's: no other traffic), N UDP
/// datagrams to a bound socket on 127.0.0.1: the net probe (no pod
/// selection, per-packet records, --flow 'udp and port P') follows each
/// through lo's queue, transmit and receive (the same sk_buff, latencies
/// that add up), and the flow's totals are N packets of 20 + 8 + payload IP
/// bytes, as the netns's Udp InDatagrams counts them.
#[test]
fn net_datagrams_on_lo_followed_and_counted() {
    if !require_root() {
        return;
    }
    const N: usize = 5;
    const PAYLOAD: usize = 100;
    let port = 39171u16;
    let mut t = own_tracer(&[ProbeKind::Net]);
    t.set_net_options(&podscope_bpf::NetOptions {
        per_packet: true,
        filter: Some(podscope_model::FlowFilter::parse(&format!("udp and port {port}")).unwrap()),
    })
    .unwrap();
    let (netns, received) = std::thread::spawn(move || {
        // SAFETY: unshare(2) with a plain flag; it changes this thread only.
        assert_eq!(unsafe { libc::unshare(libc::CLONE_NEWNET) }, 0, "unshare");
        let st = std::process::Command::new("ip")
            .args(["link", "set", "lo", "up"])
            .status()
            .unwrap();
        assert!(st.success());
        use std::os::unix::fs::MetadataExt;
        let netns = std::fs::metadata("/proc/thread-self/ns/net").unwrap().ino();
        let before = snmp_counter("Udp", "InDatagrams");
        let rx = std::net::UdpSocket::bind(("127.0.0.1", port)).unwrap();
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut buf = [0u8; 2048];
        for _ in 0..N {
            tx.send_to(&[1u8; PAYLOAD], ("127.0.0.1", port)).unwrap();
            assert_eq!(rx.recv(&mut buf).unwrap(), PAYLOAD);
        }
        (netns, snmp_counter("Udp", "InDatagrams") - before)
    })
    .join()
    .unwrap();
    assert_eq!(received, N as u64);
    let ours = |e: &podscope_model::Event| matches!(&e.data, EventData::NetPacket(p) if u64::from(p.netns) == netns);
    let mut events = collect_until(&mut t, Duration::from_secs(10), 3 * N, ours);
    t.flush(&mut events).unwrap();
    let mut packets: std::collections::BTreeMap<u64, Vec<&podscope_model::NetPacketEvent>> =
        Default::default();
    for e in &events {
        if let EventData::NetPacket(p) = &e.data {
            if u64::from(p.netns) == netns {
                packets.entry(p.packet).or_default().push(p);
            }
        }
    }
    assert_eq!(packets.len(), N, "{packets:#?}");
    for recs in packets.values() {
        let stages: Vec<&str> = recs.iter().map(|r| r.stage.as_str()).collect();
        // Neither a pod's nor the host's netns: "peer".
        assert_eq!(
            stages,
            ["peer_queue", "peer_xmit", "peer_recv"],
            "{recs:#?}"
        );
        assert!(recs
            .iter()
            .all(|r| r.skb == recs[0].skb && r.ifname == "lo"));
        assert!(recs[0].first && recs[0].step_ns == 0);
        let sum: u64 = recs.iter().map(|r| r.step_ns).sum();
        assert_eq!(recs[2].total_ns, sum, "{recs:#?}");
        assert_eq!((recs[0].protocol.as_str(), recs[0].dport), ("udp", port));
        assert_eq!(recs[0].ip_len as usize, 20 + 8 + PAYLOAD);
    }
    let flows: Vec<&podscope_model::NetFlowEvent> = events
        .iter()
        .filter_map(|e| match &e.data {
            EventData::NetFlow(f) if f.dport == port => Some(f),
            _ => None,
        })
        .collect();
    let f = flows.last().expect("a flow summary");
    assert_eq!(
        (f.packets, f.bytes, f.drops),
        (N as u64, (N * (20 + 8 + PAYLOAD)) as u64, 0)
    );
    let counts: Vec<(&str, u64)> = f
        .stages
        .iter()
        .map(|s| (s.stage.as_str(), s.packets))
        .collect();
    assert_eq!(
        counts,
        [
            ("peer_queue", N as u64),
            ("peer_xmit", N as u64),
            ("peer_recv", N as u64)
        ]
    );
    eprintln!(
        "net: {N} datagrams followed on lo, e2e p50 {} ns",
        f.end_to_end_p50_ns
    );
}
