//! The host facts probes depend on: privileges, tracefs, kernel BTF, and
//! whether each probe's hooks exist on this kernel.

use std::path::Path;

use podscope_model::{Hook, ProbeKind};

use crate::Error;

const TRACEFS: &str = "/sys/kernel/tracing";
const DEBUGFS_TRACING: &str = "/sys/kernel/debug/tracing";
const BTF: &str = "/sys/kernel/btf/vmlinux";

const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// The effective capability set of this process, from /proc/self/status.
fn effective_caps() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .unwrap_or(0)
}

/// Fails, naming the missing capabilities, unless this process can load and
/// attach tracing BPF programs (CAP_BPF + CAP_PERFMON, or CAP_SYS_ADMIN).
pub fn check_privileges() -> Result<(), Error> {
    let caps = effective_caps();
    let has = |c: u32| caps & (1u64 << c) != 0;
    if has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON)) {
        return Ok(());
    }
    let mut missing = Vec::new();
    if !has(CAP_BPF) {
        missing.push("CAP_BPF");
    }
    if !has(CAP_PERFMON) {
        missing.push("CAP_PERFMON");
    }
    Err(Error::Privilege(format!(
        "podscope needs {} (or CAP_SYS_ADMIN) to load BPF probes; run it as root (sudo podscope ...) \
         or grant them: sudo setcap cap_bpf,cap_perfmon,cap_sys_resource+ep $(which podscope)",
        missing.join(" and ")
    )))
}

/// The tracefs events directory, mounting tracefs first if nothing has
/// (container images and minimal VMs often leave it unmounted).
pub fn tracefs_events() -> Result<&'static Path, Error> {
    for dir in [TRACEFS, DEBUGFS_TRACING] {
        let events = Path::new(dir).join("events");
        if events.is_dir() {
            return Ok(if dir == TRACEFS {
                Path::new("/sys/kernel/tracing/events")
            } else {
                Path::new("/sys/kernel/debug/tracing/events")
            });
        }
    }
    mount_tracefs()?;
    Ok(Path::new("/sys/kernel/tracing/events"))
}

fn mount_tracefs() -> Result<(), Error> {
    let src = c"nodev";
    let target = c"/sys/kernel/tracing";
    let fstype = c"tracefs";
    // SAFETY: all pointers are valid NUL-terminated strings; data may be NULL.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(Error::Io {
            what: "tracefs is not mounted at /sys/kernel/tracing and mounting it failed \
                   (mount -t tracefs nodev /sys/kernel/tracing)"
                .into(),
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// Whether a probe can run here, and if not, why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeSupport {
    /// Every hook exists.
    Supported,
    /// Something the probe needs is missing.
    Unsupported(String),
}

/// Checks a probe's hooks against tracefs and kernel BTF. It does not load
/// anything; `Tracer::new` reports verifier failures separately.
pub fn probe_support(probe: ProbeKind) -> ProbeSupport {
    let btf = Path::new(BTF).exists();
    if !btf {
        return ProbeSupport::Unsupported(format!(
            "kernel BTF ({BTF}) is missing: podscope's CO-RE probes need a kernel built with CONFIG_DEBUG_INFO_BTF=y"
        ));
    }
    let events = match tracefs_events() {
        Ok(e) => e,
        Err(e) => return ProbeSupport::Unsupported(e.to_string()),
    };
    let missing: Vec<String> = probe
        .hooks()
        .iter()
        .filter(|h| !events.join(h.tracefs_event()).is_dir())
        .map(Hook::describe)
        .collect();
    if missing.is_empty() {
        ProbeSupport::Supported
    } else {
        ProbeSupport::Unsupported(format!("this kernel lacks {}", missing.join(", ")))
    }
}

/// Fails with a clear message when the kernel has no BTF.
pub(crate) fn require_btf() -> Result<(), Error> {
    if Path::new(BTF).exists() {
        Ok(())
    } else {
        Err(Error::InvalidOption(format!(
            "kernel BTF ({BTF}) is missing; podscope's probes use CO-RE and need a kernel built with \
             CONFIG_DEBUG_INFO_BTF=y (most distribution kernels since 5.4 are)"
        )))
    }
}
