//! Helpers for tests that load real probes: root checks, scratch cgroups,
//! unique programs to exec, and polling until an expected event shows up.
#![allow(dead_code)]

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use podscope_bpf::{TraceOptions, Tracer};
use podscope_model::Event;

/// Root tests need CAP_BPF/CAP_PERFMON. CI runs as root; elsewhere they fail
/// loudly unless PODSCOPE_SKIP_ROOT_TESTS=1 says to skip (and says so).
pub fn require_root() -> bool {
    if podscope_bpf::check_privileges().is_ok() {
        return true;
    }
    if std::env::var_os("PODSCOPE_SKIP_ROOT_TESTS").is_some() {
        eprintln!("SKIPPED: needs root (PODSCOPE_SKIP_ROOT_TESTS is set)");
        return false;
    }
    panic!("this test loads BPF programs and needs root; run as root or set PODSCOPE_SKIP_ROOT_TESTS=1 to skip");
}

pub fn unique(tag: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{tag}{}x{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A copy of /bin/true under a unique name, so its exec is unmistakable.
pub fn unique_program(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(unique("podscope-test-"));
    std::fs::create_dir_all(&dir).unwrap();
    let prog = dir.join(unique(tag));
    std::fs::copy("/bin/true", &prog).unwrap();
    prog
}

/// Where cgroup v2 is mounted (pure v2 or hybrid).
pub fn v2_root() -> PathBuf {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    info.lines()
        .find_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            (post.split_whitespace().next()? == "cgroup2")
                .then(|| PathBuf::from(pre.split_whitespace().nth(4).unwrap()))
        })
        .expect("a cgroup v2 mount")
}

/// A fresh cgroup v2 directory, removed on drop.
pub struct TestCgroup {
    pub path: PathBuf,
}

impl TestCgroup {
    pub fn new() -> TestCgroup {
        let path = v2_root().join(unique("podscope-test-"));
        std::fs::create_dir(&path).unwrap();
        TestCgroup { path }
    }

    pub fn id(&self) -> u64 {
        std::fs::metadata(&self.path).unwrap().ino()
    }

    /// `sh -c SCRIPT` started inside this cgroup (the shell joins, then runs SCRIPT).
    pub fn run(&self, script: &str) -> std::process::ExitStatus {
        run_in(Some(&self.path), script)
    }

    /// Trace options for `probes` filtered to this cgroup (the rest default:
    /// change them with `..cg.options(...)`).
    pub fn options(&self, probes: &[podscope_model::ProbeKind]) -> TraceOptions {
        TraceOptions {
            probes: probes.to_vec(),
            filter: podscope_bpf::Filter {
                cgroups: Some(vec![self.id()]),
                ..podscope_bpf::Filter::default()
            },
            ..TraceOptions::default()
        }
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        // Processes have exited by now; an empty cgroup can be removed.
        for _ in 0..50 {
            if std::fs::remove_dir(&self.path).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Runs `sh -c SCRIPT`, first moving the shell into `cgroup` when given.
pub fn run_in(cgroup: Option<&Path>, script: &str) -> std::process::ExitStatus {
    let full = match cgroup {
        Some(cg) => format!("echo $$ > {}/cgroup.procs && {script}", cg.display()),
        None => script.to_string(),
    };
    std::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(full)
        .status()
        .unwrap()
}

pub fn tracer(opts: TraceOptions) -> Tracer {
    Tracer::new(&opts).unwrap_or_else(|e| panic!("loading probes: {e}"))
}

/// Polls until `pred` has matched `want` events or `timeout` passes; returns all events seen.
pub fn collect_until(
    tracer: &mut Tracer,
    timeout: Duration,
    want: usize,
    pred: impl Fn(&Event) -> bool,
) -> Vec<Event> {
    let start = Instant::now();
    let mut all = Vec::new();
    while start.elapsed() < timeout {
        tracer.poll(Duration::from_millis(50), &mut all).unwrap();
        if all.iter().filter(|e| pred(e)).count() >= want {
            break;
        }
    }
    all
}

/// A loop block device over a sparse file, detached (and the file removed)
/// on drop. Its requests are only the test's own, so they can be compared
/// exactly with the device's stat file; it also gives the kernel guests of
/// the matrix (whose `/` is 9p + tmpfs) a real block device.
pub struct LoopDevice {
    pub dev: PathBuf,
    backing: PathBuf,
}

impl LoopDevice {
    pub fn new(mib: u64) -> LoopDevice {
        let backing = std::env::temp_dir().join(unique("podscope-loop-"));
        let f = std::fs::File::create(&backing).unwrap();
        f.set_len(mib << 20).unwrap();
        drop(f);
        let out = std::process::Command::new("losetup")
            .args(["--find", "--show"])
            .arg(&backing)
            .output()
            .expect("losetup (util-linux) is needed for the block I/O tests");
        assert!(
            out.status.success(),
            "losetup --find --show {}: {}",
            backing.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let dev = PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
        LoopDevice { dev, backing }
    }

    /// `loop3` for `/dev/loop3`: the disk name bio events carry.
    pub fn name(&self) -> String {
        self.dev.file_name().unwrap().to_str().unwrap().to_string()
    }

    /// The fields of `/sys/block/<name>/stat` (see the kernel's
    /// Documentation/block/stat.rst): 0 reads, 2 sectors read, 4 writes,
    /// 6 sectors written, 15 flushes (Linux 5.5+).
    pub fn stat(&self) -> Vec<u64> {
        std::fs::read_to_string(format!("/sys/block/{}/stat", self.name()))
            .unwrap()
            .split_whitespace()
            .map(|v| v.parse().unwrap())
            .collect()
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        let _ = std::process::Command::new("losetup")
            .arg("-d")
            .arg(&self.dev)
            .status();
        let _ = std::fs::remove_file(&self.backing);
    }
}

/// An ext4 file system (no journal: only the test writes to it) on its own
/// loop device, mounted at `dir`; unmounted and removed on drop.
pub struct ScratchFs {
    pub dir: PathBuf,
    pub device: LoopDevice,
}

impl ScratchFs {
    pub fn new(mib: u64) -> ScratchFs {
        let device = LoopDevice::new(mib);
        let ok = std::process::Command::new("mkfs.ext4")
            .args(["-q", "-F", "-O", "^has_journal"])
            .arg(&device.dev)
            .status()
            .expect("mkfs.ext4 (e2fsprogs) is needed for the block I/O tests");
        assert!(ok.success(), "mkfs.ext4 {}", device.dev.display());
        let dir = std::env::temp_dir().join(unique("podscope-fs-"));
        std::fs::create_dir_all(&dir).unwrap();
        let ok = std::process::Command::new("mount")
            .arg(&device.dev)
            .arg(&dir)
            .status()
            .unwrap();
        assert!(
            ok.success(),
            "mount {} {}",
            device.dev.display(),
            dir.display()
        );
        ScratchFs { dir, device }
    }
}

impl Drop for ScratchFs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.dir).status();
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// A buffer of `len` bytes aligned to 4 KiB, for O_DIRECT.
pub struct Aligned {
    buf: Vec<u8>,
    off: usize,
    len: usize,
}

impl Aligned {
    pub fn new(len: usize, fill: u8) -> Aligned {
        let buf = vec![fill; len + 4096];
        let off = buf.as_ptr().align_offset(4096);
        Aligned { buf, off, len }
    }

    pub fn bytes(&self) -> &[u8] {
        &self.buf[self.off..self.off + self.len]
    }
}
