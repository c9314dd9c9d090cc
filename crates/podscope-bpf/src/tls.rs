//! tls probe, kernel side: the plaintext of OpenSSL calls (SSL_read,
//! SSL_write and their _ex forms) of selected tasks, from uprobes on every
//! libssl file the selected processes map, kept attached as processes come.
//!
//! Each distinct library file (device + inode of the mapping, so overlayfs
//! layers shared by containers count once) gets one set of uprobes with pid
//! -1: every process that maps the file hits them, and the in-kernel pod
//! filter keeps the unselected ones out (they pay the uprobe trap, about a
//! microsecond per SSL call, and nothing else). Per-pid attachment would
//! need one attach per process, and a process started later would wait for
//! its own attach; with pid -1 a new process of an already attached file is
//! traced from its first call.

mod skel {
    #![allow(missing_debug_implementations, missing_docs, clippy::all)]
    include!(concat!(env!("OUT_DIR"), "/tls.skel.rs"));
}

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use libbpf_rs::{Link, MapCore, MapFlags, UprobeOpts};
use podscope_model::{Event, EventData, ProbeKind, SockDataEvent, SockDataKind};
use skel::{types, TlsProbeSkel, TlsProbeSkelBuilder};

use crate::decode::{family_name, header, inet_addr, read_into, Clock};
use crate::golang;
use crate::libssl::{self, FileId, Roots, Schedule};
use crate::load::{common_accessors, load_skeleton, DecodeFn, LoadSettings, LoadedProbe};

// SAFETY: generated from the C struct: plain integers and arrays, no pointers.
unsafe impl plain::Plain for types::tls_event {}

/// The most a plaintext capture can be (TLS_DATA_MAX in bpf/tls.h).
const MAX_CAPTURE_BYTES: u32 = 16384;

/// The exported functions hooked, each at entry and return.
const FUNCS: [&str; 5] = [
    "SSL_read",
    "SSL_write",
    "SSL_read_ex",
    "SSL_write_ex",
    "SSL_do_handshake",
];

/// Which processes the kernel filter lets through, mirrored in user space
/// to decide whose libraries to attach to.
#[derive(Debug, Clone)]
struct Select {
    by_cgroup: bool,
    by_pid: bool,
    comm: Option<String>,
    self_tgid: u32,
}

pub(crate) struct Probe {
    // Before `skel`: the links are destroyed before the programs they use.
    links: Vec<Link>,
    skel: crate::load::Owned<TlsProbeSkel<'static>>,
    /// Library files looked at, and how many uprobes each got.
    files: HashMap<FileId, usize>,
    /// Executables looked at for Go's crypto/tls, and how many uprobes each
    /// got (0: not Go, no crypto/tls, or not supported).
    go_files: HashMap<FileId, usize>,
    /// Go programs with crypto/tls that cannot be probed (said once each).
    go_unsupported: u64,
    roots: Roots,
    schedule: Schedule,
    select: Select,
    attach_failures: u64,
    last_tick: Option<Instant>,
}

pub(crate) fn load(settings: &LoadSettings) -> Result<Box<dyn LoadedProbe>, crate::Error> {
    let capture = settings.http_capture_bytes.min(MAX_CAPTURE_BYTES);
    let skel = load_skeleton!(
        TlsProbeSkelBuilder,
        ProbeKind::Tls.name(),
        settings,
        |open: &mut skel::OpenTlsProbeSkel| {
            if let Some(ro) = open.maps.rodata_data.as_deref_mut() {
                ro.capture_bytes = capture;
            }
        }
    );
    // Kept, not dropped: releasing a uprobe waits for an RCU grace period
    // (about 0.1 s here), better spent with the others at the end.
    let test_link = self_test(&skel)?;
    let comm = settings.filter_comm.map(|c| {
        let bytes: Vec<u8> = c
            .iter()
            .take_while(|b| **b != 0)
            .map(|b| *b as u8)
            .collect();
        String::from_utf8_lossy(&bytes).into_owned()
    });
    Ok(Box::new(Probe {
        links: test_link.into_iter().collect(),
        skel,
        files: HashMap::new(),
        go_files: HashMap::new(),
        go_unsupported: 0,
        roots: Roots::new(),
        schedule: Schedule::default(),
        select: Select {
            by_cgroup: settings.filter_by_cgroup,
            by_pid: settings.filter_by_pid,
            comm,
            self_tgid: settings.self_tgid,
        },
        attach_failures: 0,
        last_tick: None,
    }))
}

impl Probe {
    fn programs(&self) -> [(&'static str, &libbpf_rs::ProgramMut<'static>, bool); 10] {
        let p = &self.skel.progs;
        [
            (FUNCS[0], &p.ssl_read_enter, false),
            (FUNCS[0], &p.ssl_read_ret, true),
            (FUNCS[1], &p.ssl_write_enter, false),
            (FUNCS[1], &p.ssl_write_ret, true),
            (FUNCS[2], &p.ssl_read_ex_enter, false),
            (FUNCS[2], &p.ssl_read_ex_ret, true),
            (FUNCS[3], &p.ssl_write_ex_enter, false),
            (FUNCS[3], &p.ssl_write_ex_ret, true),
            (FUNCS[4], &p.ssl_handshake_enter, false),
            (FUNCS[4], &p.ssl_handshake_ret, true),
        ]
    }

    /// Attaches every hook to one library file (once per file, whatever
    /// the outcome: a failure is counted, not retried forever).
    fn attach_file(&mut self, path: &Path, id: FileId) {
        use std::os::fd::AsRawFd;
        if self.files.contains_key(&id) {
            return;
        }
        // Through our own open descriptor: `/proc/PID/root/...` of a
        // short-lived process (a curl) vanishes when it exits, possibly
        // between two of the ten attaches. A file that cannot be opened
        // (the process is gone already) is not marked: the next process
        // that maps it brings it up again.
        let Ok(file) = std::fs::File::open(path) else {
            return;
        };
        let path = format!("/proc/self/fd/{}", file.as_raw_fd());
        let path = Path::new(&path);
        let mut links = Vec::new();
        let mut failures = 0;
        for (func, prog, retprobe) in self.programs() {
            let opts = UprobeOpts {
                func_name: Some(func.to_string()),
                retprobe,
                ..UprobeOpts::default()
            };
            match prog.attach_uprobe_with_opts(-1, path, 0, opts) {
                Ok(l) => links.push(l),
                Err(_) => failures += 1,
            }
        }
        self.attach_failures += failures;
        self.files.insert(id, links.len());
        self.links.extend(links);
    }

    /// Looks at a process's executable once per file: a Go program with
    /// crypto/tls gets uprobes at the entry of `(*Conn).Read` and
    /// `(*Conn).Write` and at each RET of Read (pid -1, as for libssl).
    fn look_go(&mut self, pid: u32, maps: &str) {
        use std::os::fd::AsRawFd;
        let Ok(exe) = std::fs::read_link(format!("/proc/{pid}/exe")) else {
            return;
        };
        let exe = exe.to_string_lossy();
        let exe = exe.strip_suffix(" (deleted)").unwrap_or(&exe);
        let Some(m) = libssl::parse_maps_where(maps, |p| p == exe)
            .into_iter()
            .next()
        else {
            return;
        };
        if self.go_files.contains_key(&m.id) {
            return;
        }
        let path = libssl::host_path(pid, &m);
        let Ok(file) = std::fs::File::open(&path) else {
            return;
        };
        let fd_path = format!("/proc/self/fd/{}", file.as_raw_fd());
        let go = match golang::look(Path::new(&fd_path)) {
            golang::Look::Tls(go) => go,
            golang::Look::Unsupported(why) => {
                self.go_unsupported += 1;
                eprintln!(
                    "podscope: warning: tls: {exe} (pid {pid}) is a Go program with crypto/tls \
                     that cannot be probed ({why}): its TLS plaintext is not seen"
                );
                self.go_files.insert(m.id, 0);
                return;
            }
            golang::Look::NotGo | golang::Look::NoTls => {
                self.go_files.insert(m.id, 0);
                return;
            }
        };
        let p = &self.skel.progs;
        // By file offset: a stripped executable has no symbol to name.
        let mut hooks: Vec<(&libbpf_rs::ProgramMut<'static>, u64)> = vec![
            (&p.go_tls_read_enter, go.read),
            (&p.go_tls_write_enter, go.write),
        ];
        hooks.extend(go.read_rets.iter().map(|&o| (&p.go_tls_ret, o)));
        let mut links = Vec::new();
        let mut failures = 0;
        for (prog, offset) in hooks {
            match prog.attach_uprobe_with_opts(-1, &fd_path, offset as usize, UprobeOpts::default())
            {
                Ok(l) => links.push(l),
                Err(_) => failures += 1,
            }
        }
        if failures > 0 {
            // Half a set would see requests without their responses: none.
            links.clear();
            self.go_unsupported += 1;
            eprintln!(
                "podscope: warning: tls: {exe} ({}): {failures} of its uprobes could not be \
                 attached: its TLS plaintext is not seen",
                go.version
            );
        }
        self.attach_failures += failures;
        self.go_files.insert(m.id, links.len());
        self.links.extend(links);
    }

    fn in_map(map: &dyn MapCore, key: &[u8]) -> bool {
        matches!(map.lookup(key, MapFlags::ANY), Ok(Some(_)))
    }

    /// Whether the kernel filter lets this process through.
    fn selected(&self, pid: u32) -> bool {
        let s = &self.select;
        if pid == s.self_tgid {
            return false;
        }
        if s.by_pid && !Self::in_map(&*self.skel.maps.filter_pids, &pid.to_ne_bytes()) {
            return false;
        }
        if let Some(comm) = &s.comm {
            match std::fs::read_to_string(format!("/proc/{pid}/comm")) {
                Ok(c) if c.trim_end_matches('\n') == comm => {}
                _ => return false,
            }
        }
        if s.by_cgroup {
            let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/cgroup")) else {
                return false;
            };
            let Some(path) = libssl::cgroup_v2_path(&text) else {
                return false;
            };
            return libssl::cgroup_ids(path)
                .iter()
                .any(|id| Self::in_map(&*self.skel.maps.filter_cgroups, &id.to_ne_bytes()));
        }
        true
    }

    /// Attaches to the libssl files a process maps, and to those in its
    /// root's library directories the first time that root is seen.
    /// False when the process is gone.
    /// Looks at a process: attaches to the libssl it maps (and those of a
    /// container root seen for the first time). False when it needs no
    /// further look: it is gone, or it is statically linked.
    fn scan(&mut self, pid: u32) -> bool {
        use std::os::unix::fs::MetadataExt;
        let Ok(maps) = std::fs::read_to_string(format!("/proc/{pid}/maps")) else {
            return false;
        };
        let dynamic = libssl::maps_shared_objects(&maps);
        self.look_go(pid, &maps);
        for m in libssl::parse_maps(&maps) {
            self.attach_file(&libssl::host_path(pid, &m), m.id);
        }
        let root = format!("/proc/{pid}/root");
        if let Ok(md) = std::fs::metadata(&root) {
            if self.roots.insert((md.dev(), md.ino())) {
                for path in libssl::libs_under(Path::new(&root)) {
                    if let Some(id) = mapped_id(&path) {
                        self.attach_file(&path, id);
                    }
                }
            }
        }
        // A static binary (busybox, most Go programs) cannot map libssl
        // later: no rescans (measured: per-exec rescans were half of a
        // trace's CPU with 500 short-lived execs a second).
        dynamic
    }

    fn tick_inner(&mut self, full: bool) {
        let now = Instant::now();
        if !full
            && self
                .last_tick
                .is_some_and(|t| now - t < Duration::from_millis(15))
        {
            return;
        }
        self.last_tick = Some(now);
        let keys: Vec<Vec<u8>> = self.skel.maps.tls_execs.keys().collect();
        for k in keys {
            let _ = self.skel.maps.tls_execs.delete(&k);
            if let Ok(b) = <[u8; 4]>::try_from(k.as_slice()) {
                self.schedule.exec(u32::from_ne_bytes(b), now);
            }
        }
        let mut pids = self.schedule.due(now);
        if self.schedule.full_due(now) || full {
            let mine: Vec<u32> = libssl::all_pids()
                .into_iter()
                .filter(|p| self.selected(*p))
                .collect();
            pids.extend(mine);
            pids.sort_unstable();
            pids.dedup();
        }
        for pid in pids {
            if !self.scan(pid) {
                self.schedule.gone(pid);
            }
        }
    }
}

/// Attaches one uprobe to a libc function in this process only and
/// detaches it: loading programs proves nothing about uprobes, and
/// `podscope probes` must say whether they work here.
fn self_test(skel: &TlsProbeSkel<'static>) -> Result<Option<Link>, crate::Error> {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    let Some(libc) = maps
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .find(|p| {
            p.rsplit('/')
                .next()
                .is_some_and(|n| n.starts_with("libc.so"))
        })
    else {
        return Ok(None); // not glibc: the first real attach will tell
    };
    let opts = UprobeOpts {
        func_name: Some("gnu_get_libc_version".into()),
        ..UprobeOpts::default()
    };
    skel.progs
        .ssl_handshake_enter
        .attach_uprobe_with_opts(std::process::id() as i32, libc, 0, opts)
        .map(Some)
        .map_err(|e| crate::Error::Unsupported {
            probe: ProbeKind::Tls,
            reason: format!("a uprobe on {libc} could not be attached here ({e}): this kernel does not run uprobes"),
        })
}

/// The device and inode the kernel maps `path` as (for overlayfs, the real
/// file underneath: what `/proc/PID/maps` shows and what uprobes attach
/// to), found by mapping one page of it and reading our own maps.
fn mapped_id(path: &Path) -> Option<FileId> {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open(path).ok()?;
    if f.metadata().ok()?.len() == 0 {
        return None;
    }
    // SAFETY: a new private read-only mapping of one page of an open file;
    // it is never read through and is unmapped below.
    let addr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ,
            libc::MAP_PRIVATE,
            f.as_raw_fd(),
            0,
        )
    };
    if addr == libc::MAP_FAILED {
        return None;
    }
    let start = format!("{:x}-", addr as usize);
    let id = std::fs::read_to_string("/proc/self/maps")
        .ok()
        .and_then(|maps| {
            let line = maps.lines().find(|l| l.starts_with(&start))?.to_string();
            let mut f = line.split_whitespace().skip(3);
            let (maj, min) = f.next()?.split_once(':')?;
            Some(FileId {
                dev_major: u32::from_str_radix(maj, 16).ok()?,
                dev_minor: u32::from_str_radix(min, 16).ok()?,
                ino: f.next()?.parse().ok()?,
            })
        });
    // SAFETY: the mapping made above, of that length.
    unsafe { libc::munmap(addr, 4096) };
    id
}

impl LoadedProbe for Probe {
    fn kind(&self) -> ProbeKind {
        ProbeKind::Tls
    }
    fn ring(&self) -> Option<&libbpf_rs::MapMut<'static>> {
        Some(&self.skel.maps.events)
    }
    fn decoder(&self) -> DecodeFn {
        decode
    }
    fn counters(&self) -> Vec<(&'static str, u64)> {
        let m = &self.skel.maps.tls_stats;
        let stat = |i| crate::load::read_stat(m, i);
        vec![
            ("libssl_files", self.files.len() as u64),
            (
                "go_programs",
                self.go_files.values().filter(|n| **n > 0).count() as u64,
            ),
            ("go_unsupported", self.go_unsupported),
            (
                "uprobes",
                (self.files.values().sum::<usize>() + self.go_files.values().sum::<usize>()) as u64,
            ),
            ("attach_failures", self.attach_failures),
            ("socket_from_syscall", stat(0)),
            ("socket_from_go_conn", stat(7)),
            ("socket_from_ssl", stat(1)),
            ("socket_from_thread", stat(2)),
            ("no_socket", stat(3)),
            ("connections_not_http", stat(4)),
            ("bytes_not_http", stat(5)),
            ("execs_not_followed", stat(6) + self.schedule.overflow),
        ]
    }
    fn tick(&mut self, full: bool) {
        self.tick_inner(full);
    }
    common_accessors!();
}

fn fn_name(n: u8) -> &'static str {
    match n {
        1 => "SSL_read",
        2 => "SSL_write",
        3 => "SSL_read_ex",
        4 => "SSL_write_ex",
        6 => "crypto/tls.(*Conn).Read",
        7 => "crypto/tls.(*Conn).Write",
        _ => "",
    }
}

/// The fixed part of a record before the plaintext.
const HEAD: usize = std::mem::offset_of!(types::tls_event, data);

thread_local! {
    /// One record's fixed part, reused: the struct's payload array is large.
    static SCRATCH: std::cell::RefCell<Box<types::tls_event>> = std::cell::RefCell::new(Box::default());
}

fn decode(data: &[u8], clock: &Clock) -> Option<Event> {
    if data.len() < HEAD {
        return None;
    }
    SCRATCH.with_borrow_mut(|raw| {
        read_into(&mut **raw, &data[..HEAD]);
        let raw: &types::tls_event = raw;
        let kind = match raw.kind {
            1 => SockDataKind::Data,
            2 => SockDataKind::Close,
            _ => return None,
        };
        let payload = data.get(HEAD..HEAD + raw.captured as usize)?.to_vec();
        let h = header!(raw.hdr);
        let ev = EventData::SockData(SockDataEvent {
            kind,
            protocol: match raw.proto {
                2 => "http2",
                // DNS over TLS: the stream DNS over TCP would be.
                3 => "dns-tcp",
                _ => "http",
            }
            .into(),
            tls: true,
            sock: raw.sock,
            fd: raw.fd,
            direction: match raw.dir {
                1 => "tx",
                2 => "rx",
                _ => "",
            }
            .into(),
            syscall: fn_name(raw.r#fn).into(),
            len: raw.len,
            seq: raw.seq,
            family: family_name(raw.family).into(),
            saddr: inet_addr(raw.family, &raw.saddr),
            daddr: inet_addr(raw.family, &raw.daddr),
            sport: raw.sport,
            dport: raw.dport,
            payload,
        });
        Some(h.into_event(clock, ev))
    })
}
