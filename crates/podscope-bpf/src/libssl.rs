//! Finding the libssl files selected processes use: `/proc/PID/maps`
//! (opened through `/proc/PID/root`, so a container's own libssl is found),
//! the library directories of each container root, which processes the
//! kernel filter selects, and when to look again after an exec.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A library file as the kernel knows it: the device and inode of the
/// mapped file (for overlayfs, the real file underneath, as in
/// `/proc/PID/maps`), so one file is attached once however many
/// containers and paths show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct FileId {
    pub dev_major: u32,
    pub dev_minor: u32,
    pub ino: u64,
}

/// One libssl mapping of a process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Mapped {
    pub id: FileId,
    /// The path inside the process's mount namespace.
    pub path: String,
    /// `start-end` of the mapping (for `/proc/PID/map_files/`).
    pub range: String,
    /// The file was replaced or deleted since it was mapped.
    pub deleted: bool,
}

/// Whether a file name is OpenSSL's libssl (`libssl.so.3`, `libssl.so.1.1`,
/// `libssl.so`, `libssl3.so` is NSS's and is not).
pub(crate) fn is_libssl(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    name == "libssl.so" || name.starts_with("libssl.so.")
}

/// The libssl mappings in a `/proc/PID/maps` text, one per file.
/// Whether a process maps any shared object (its dynamic loader, libc):
/// a process that maps none is statically linked and will not load libssl
/// later, so it needs no second look.
pub(crate) fn maps_shared_objects(text: &str) -> bool {
    text.lines().any(|line| {
        line.splitn(6, ' ')
            .nth(5)
            .map(str::trim_start)
            .is_some_and(|p| p.starts_with('/') && p.contains(".so"))
    })
}

pub(crate) fn parse_maps(text: &str) -> Vec<Mapped> {
    parse_maps_where(text, is_libssl)
}

/// The mappings of the files whose path `wanted` picks, one per file.
pub(crate) fn parse_maps_where(text: &str, wanted: impl Fn(&str) -> bool) -> Vec<Mapped> {
    let mut out: Vec<Mapped> = Vec::new();
    for line in text.lines() {
        let mut f = line.splitn(6, ' ');
        let (Some(range), Some(_perms), Some(_off), Some(dev), Some(ino)) =
            (f.next(), f.next(), f.next(), f.next(), f.next())
        else {
            continue;
        };
        let path = f.next().unwrap_or("").trim_start();
        let (path, deleted) = match path.strip_suffix(" (deleted)") {
            Some(p) => (p, true),
            None => (path, false),
        };
        if !path.starts_with('/') || !wanted(path) {
            continue;
        }
        let Some((maj, min)) = dev.split_once(':') else {
            continue;
        };
        let (Ok(dev_major), Ok(dev_minor), Ok(ino)) = (
            u32::from_str_radix(maj, 16),
            u32::from_str_radix(min, 16),
            ino.parse::<u64>(),
        ) else {
            continue;
        };
        let id = FileId {
            dev_major,
            dev_minor,
            ino,
        };
        if ino == 0 || out.iter().any(|m| m.id == id) {
            continue;
        }
        out.push(Mapped {
            id,
            path: path.to_string(),
            range: range.to_string(),
            deleted,
        });
    }
    out
}

/// The path to open a process's mapped library by, from outside its mount
/// namespace.
pub(crate) fn host_path(pid: u32, m: &Mapped) -> PathBuf {
    if m.deleted {
        PathBuf::from(format!("/proc/{pid}/map_files/{}", m.range))
    } else {
        PathBuf::from(format!("/proc/{pid}/root{}", m.path))
    }
}

/// Where images keep libssl; looked at once per container root, so a
/// container's libssl is attached before a short-lived client in it (a
/// `curl` run from a shell) has mapped it.
pub(crate) const LIB_DIRS: &[&str] = &[
    "/lib",
    "/lib64",
    "/usr/lib",
    "/usr/lib64",
    "/usr/local/lib",
    "/usr/local/lib64",
    "/lib/x86_64-linux-gnu",
    "/usr/lib/x86_64-linux-gnu",
    "/lib/aarch64-linux-gnu",
    "/usr/lib/aarch64-linux-gnu",
];

/// libssl files in the usual library directories under `root`.
pub(crate) fn libs_under(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for dir in LIB_DIRS {
        let Ok(rd) = std::fs::read_dir(root.join(dir.trim_start_matches('/'))) else {
            continue;
        };
        for e in rd.flatten() {
            let name = e.file_name();
            let name = name.to_string_lossy();
            if is_libssl(&name) && e.path().is_file() {
                out.push(e.path());
            }
        }
    }
    out
}

/// The cgroup v2 path of a process (`0::/kubepods/...`).
pub(crate) fn cgroup_v2_path(text: &str) -> Option<&str> {
    text.lines().find_map(|l| l.strip_prefix("0::"))
}

/// Where cgroup v2 is mounted here (pure v2 or hybrid).
pub(crate) fn cgroup_v2_root() -> &'static Path {
    static ROOT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    ROOT.get_or_init(|| {
        if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
            PathBuf::from("/sys/fs/cgroup")
        } else {
            PathBuf::from("/sys/fs/cgroup/unified")
        }
    })
}

/// The v2 ids (directory inodes) of a cgroup and its ancestors, nearest first.
pub(crate) fn cgroup_ids(path: &str) -> Vec<u64> {
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    let mut p = cgroup_v2_root().join(path.trim_start_matches('/'));
    loop {
        if let Ok(m) = std::fs::metadata(&p) {
            out.push(m.ino());
        }
        if p.as_path() == cgroup_v2_root() || !p.pop() {
            break;
        }
    }
    out
}

/// When to look at an exec'ed process again: its dynamic loader maps
/// libssl right after exec, and a program may dlopen it a little later.
pub(crate) const RESCAN_AFTER_EXEC: &[Duration] = &[
    Duration::ZERO,
    Duration::from_millis(50),
    Duration::from_millis(250),
    Duration::from_secs(1),
    Duration::from_secs(3),
];

/// Every selected process is looked at again this often (libraries loaded
/// late, processes whose exec the kernel could not queue).
pub(crate) const FULL_SCAN_EVERY: Duration = Duration::from_secs(10);

/// Exec'ed processes waiting for their next look, bounded.
pub(crate) const MAX_RECENT: usize = 1024;

/// The plan of which processes to look at when.
#[derive(Debug, Default)]
pub(crate) struct Schedule {
    /// pid -> (when its exec was seen, scans done).
    recent: HashMap<u32, (Instant, usize)>,
    last_full: Option<Instant>,
    /// Exec'ed processes not followed because `recent` was full (the full
    /// scan still finds them).
    pub overflow: u64,
}

impl Schedule {
    /// A selected process exec'ed.
    pub(crate) fn exec(&mut self, pid: u32, now: Instant) {
        if self.recent.len() >= MAX_RECENT && !self.recent.contains_key(&pid) {
            self.overflow += 1;
            return;
        }
        self.recent.insert(pid, (now, 0));
    }

    /// Whether every selected process is due for a look.
    pub(crate) fn full_due(&mut self, now: Instant) -> bool {
        match self.last_full {
            Some(t) if now.duration_since(t) < FULL_SCAN_EVERY => false,
            _ => {
                self.last_full = Some(now);
                true
            }
        }
    }

    /// The exec'ed processes due for a look now; those looked at for the
    /// last time are forgotten.
    pub(crate) fn due(&mut self, now: Instant) -> Vec<u32> {
        let mut out = Vec::new();
        self.recent.retain(|pid, (seen, done)| {
            let Some(at) = RESCAN_AFTER_EXEC.get(*done) else {
                return false;
            };
            if now.duration_since(*seen) >= *at {
                out.push(*pid);
                *done += 1;
            }
            *done < RESCAN_AFTER_EXEC.len()
        });
        out.sort_unstable();
        out
    }

    /// A process that is gone needs no more looks.
    pub(crate) fn gone(&mut self, pid: u32) {
        self.recent.remove(&pid);
    }
}

/// All pids in /proc.
pub(crate) fn all_pids() -> Vec<u32> {
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    rd.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect()
}

/// Container roots already looked into, by the root directory's device and
/// inode as seen from here.
pub(crate) type Roots = HashSet<(u64, u64)>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_static_process_maps_no_shared_object() {
        assert!(maps_shared_objects(MAPS));
        let busybox = "\
00400000-00401000 r--p 00000000 fe:01 1311                       /bin/busybox
00401000-00500000 r-xp 00001000 fe:01 1311                       /bin/busybox
01a2e000-01a50000 rw-p 00000000 00:00 0                          [heap]
7ffd1d9f1000-7ffd1da12000 rw-p 00000000 00:00 0                  [stack]
7ffd1db8c000-7ffd1db8e000 r-xp 00000000 00:00 0                  [vdso]";
        assert!(!maps_shared_objects(busybox));
        let dynamic = "\
55d0c0a00000-55d0c0a2e000 r--p 00000000 fe:01 1311                       /usr/bin/curl
7f1c2a400000-7f1c2a41f000 r--p 00000000 fe:01 2637                       /usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2";
        assert!(maps_shared_objects(dynamic));
    }

    const MAPS: &str = "\
55d0c0a00000-55d0c0a2e000 r--p 00000000 fe:01 1311                       /usr/sbin/nginx
7f1c2a400000-7f1c2a41f000 r--p 00000000 fe:01 2637                       /usr/lib/x86_64-linux-gnu/libssl.so.3
7f1c2a41f000-7f1c2a47f000 r-xp 0001f000 fe:01 2637                       /usr/lib/x86_64-linux-gnu/libssl.so.3
7f1c2a500000-7f1c2a510000 r-xp 00000000 00:2d 99                         /lib/libssl.so.1.1 (deleted)
7f1c2a600000-7f1c2a610000 r-xp 00000000 fe:01 77                         /usr/lib/libssl3.so
7f1c2a700000-7f1c2a710000 rw-p 00000000 00:00 0                          [heap]
7f1c2a800000-7f1c2a810000 r-xp 00000000 fe:01 80                         /usr/lib/x86_64-linux-gnu/libcrypto.so.3
";

    #[test]
    fn maps_give_each_libssl_file_once_with_its_real_identity() {
        let m = parse_maps(MAPS);
        assert_eq!(m.len(), 2, "{m:?}");
        assert_eq!(
            m[0].id,
            FileId {
                dev_major: 0xfe,
                dev_minor: 1,
                ino: 2637
            }
        );
        assert_eq!(m[0].path, "/usr/lib/x86_64-linux-gnu/libssl.so.3");
        assert!(!m[0].deleted);
        assert_eq!(
            host_path(42, &m[0]),
            PathBuf::from("/proc/42/root/usr/lib/x86_64-linux-gnu/libssl.so.3")
        );
        assert!(m[1].deleted);
        assert_eq!(m[1].id.dev_major, 0);
        assert_eq!(m[1].id.dev_minor, 0x2d);
        assert_eq!(
            host_path(42, &m[1]),
            PathBuf::from("/proc/42/map_files/7f1c2a500000-7f1c2a510000")
        );
    }

    #[test]
    fn only_openssl_libssl_names_count() {
        assert!(is_libssl("/usr/lib/libssl.so.3"));
        assert!(is_libssl("libssl.so.1.1"));
        assert!(is_libssl("/x/libssl.so"));
        assert!(!is_libssl("/usr/lib/libssl3.so"));
        assert!(!is_libssl("/usr/lib/libcrypto.so.3"));
        assert!(!is_libssl("/usr/lib/libssl.so.3.bak/x"));
    }

    #[test]
    fn cgroup_v2_line_is_found_in_hybrid_and_pure_layouts() {
        let hybrid = "12:pids:/kubepods/x\n1:name=systemd:/\n0::/kubepods/besteffort/podabc/123\n";
        assert_eq!(
            cgroup_v2_path(hybrid),
            Some("/kubepods/besteffort/podabc/123")
        );
        assert_eq!(cgroup_v2_path("0::/\n"), Some("/"));
        assert_eq!(cgroup_v2_path("3:cpu:/a\n"), None);
    }

    #[test]
    fn an_exec_is_looked_at_soon_then_a_few_times_more_then_forgotten() {
        let mut s = Schedule::default();
        let t0 = Instant::now();
        s.exec(7, t0);
        assert_eq!(s.due(t0), vec![7]);
        assert!(s.due(t0 + Duration::from_millis(10)).is_empty());
        assert_eq!(s.due(t0 + Duration::from_millis(60)), vec![7]);
        assert_eq!(s.due(t0 + Duration::from_millis(300)), vec![7]);
        assert_eq!(s.due(t0 + Duration::from_secs(2)), vec![7]);
        assert_eq!(s.due(t0 + Duration::from_secs(4)), vec![7]);
        assert!(s.due(t0 + Duration::from_secs(60)).is_empty());
        s.exec(8, t0);
        s.gone(8);
        assert!(s.due(t0).is_empty());
    }

    #[test]
    fn full_scans_come_at_the_start_and_then_every_period() {
        let mut s = Schedule::default();
        let t0 = Instant::now();
        assert!(s.full_due(t0));
        assert!(!s.full_due(t0 + Duration::from_secs(1)));
        assert!(s.full_due(t0 + FULL_SCAN_EVERY));
    }

    #[test]
    fn recent_execs_are_bounded_and_the_overflow_counted() {
        let mut s = Schedule::default();
        let t0 = Instant::now();
        for pid in 0..(MAX_RECENT as u32 + 5) {
            s.exec(pid, t0);
        }
        assert_eq!(s.overflow, 5);
        assert_eq!(s.due(t0).len(), MAX_RECENT);
    }
}
