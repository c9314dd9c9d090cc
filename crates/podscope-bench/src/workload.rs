//! Bounded storms of real kernel events, run in a child process that first
//! moves itself into a cgroup so tracers can select exactly its events.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

/// What a storm did, as the child reports it.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Report {
    pub elapsed_ns: u64,
    pub operations: u64,
}

/// The storms, by name.
pub const KINDS: [&str; 4] = ["exec", "tcp", "open", "bio"];

/// Entry point of `podscope-bench workload KIND N CGROUP_DIR`.
pub fn run(kind: &str, n: u64, cgroup: &Path) -> Result<()> {
    std::fs::write(cgroup.join("cgroup.procs"), std::process::id().to_string())
        .with_context(|| format!("joining cgroup {}", cgroup.display()))?;
    let start = Instant::now();
    match kind {
        "exec" => exec_storm(n)?,
        "tcp" => tcp_storm(n)?,
        "open" => open_storm(n)?,
        "bio" => bio_storm(n)?,
        other => bail!("unknown workload {other}; one of {KINDS:?}"),
    }
    let report = Report {
        elapsed_ns: start.elapsed().as_nanos() as u64,
        operations: n,
    };
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

/// fork+exec /bin/true, one after another.
fn exec_storm(n: u64) -> Result<()> {
    for _ in 0..n {
        let st = std::process::Command::new("/bin/true").status()?;
        if !st.success() {
            bail!("/bin/true failed");
        }
    }
    Ok(())
}

/// Loopback connect, 100 bytes each way, close; the server runs in-process.
fn tcp_storm(n: u64) -> Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let server = std::thread::spawn(move || -> std::io::Result<()> {
        for _ in 0..n {
            let (mut s, _) = listener.accept()?;
            let mut buf = [0u8; 100];
            s.read_exact(&mut buf)?;
            s.write_all(&buf)?;
        }
        Ok(())
    });
    let msg = [0x42u8; 100];
    for _ in 0..n {
        let mut c = TcpStream::connect(addr)?;
        c.write_all(&msg)?;
        let mut back = [0u8; 100];
        c.read_exact(&mut back)?;
    }
    server.join().expect("server thread")?;
    Ok(())
}

/// openat + close of one existing file.
fn open_storm(n: u64) -> Result<()> {
    let path = std::env::temp_dir().join(format!("podscope-bench-open-{}", std::process::id()));
    std::fs::write(&path, b"x")?;
    for _ in 0..n {
        drop(std::fs::File::open(&path)?);
    }
    std::fs::remove_file(&path)?;
    Ok(())
}

/// 4 KiB O_DIRECT writes, each followed by fsync, on the real disk (/var/tmp,
/// or `PODSCOPE_BENCH_DISK_DIR`: the kernel guests' `/` is 9p + tmpfs, so the
/// guest bench points it at a file system on a loop device).
fn bio_storm(n: u64) -> Result<()> {
    let dir = std::env::var_os("PODSCOPE_BENCH_DISK_DIR").unwrap_or_else(|| "/var/tmp".into());
    let path = Path::new(&dir).join(format!("podscope-bench-bio-{}", std::process::id()));
    let f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(libc::O_DIRECT)
        .open(&path)
        .with_context(|| format!("O_DIRECT open of {}", path.display()))?;
    let buf = vec![0x17u8; 8192];
    let off = buf.as_ptr().align_offset(4096);
    let block = &buf[off..off + 4096];
    for i in 0..n {
        f.write_all_at(block, (i % 256) * 4096)?;
        f.sync_data()?;
    }
    drop(f);
    std::fs::remove_file(&path)?;
    Ok(())
}
