//! The host facts probes depend on: privileges, tracefs, kernel BTF, and
//! whether each probe's hooks exist on this kernel.

use std::path::Path;

use podscope_model::{Hook, Implementation, ProbeKind};

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
    /// Every hook of at least one implementation exists.
    Supported,
    /// Something the probe needs is missing.
    Unsupported(String),
}

/// The facts about this kernel's BTF that choosing hooks needs, read once.
#[derive(Debug, Default)]
pub(crate) struct KernelBtf {
    functions: std::collections::HashSet<String>,
    /// Parameters of a tracepoint's BTF prototype (the hidden context
    /// pointer not counted), by tracepoint name.
    tracepoint_args: std::collections::HashMap<String, usize>,
}

/// Kernel functions and tracepoint prototypes podscope cares about.
const BTF_FUNCTIONS: &[&str] = &[
    "folio_mark_accessed",
    "mark_page_accessed",
    "filemap_add_folio",
    "add_to_page_cache_lru",
];
const BTF_TRACEPOINTS: &[&str] = &["block_getrq", "block_rq_issue", "block_rq_merge"];

impl KernelBtf {
    fn read() -> KernelBtf {
        use libbpf_rs::btf::types::{Func, FuncProto, Ptr, Typedef};
        use libbpf_rs::btf::{Btf, ReferencesType as _};
        let mut out = KernelBtf::default();
        let Ok(btf) = Btf::from_vmlinux() else {
            return out;
        };
        for f in BTF_FUNCTIONS {
            if btf.type_by_name::<Func>(f).is_some() {
                out.functions.insert(f.to_string());
            }
        }
        for tp in BTF_TRACEPOINTS {
            let args = btf
                .type_by_name::<Typedef>(&format!("btf_trace_{tp}"))
                .and_then(|t| Ptr::try_from(t.referenced_type().skip_mods_and_typedefs()).ok())
                .and_then(|p| {
                    FuncProto::try_from(p.referenced_type().skip_mods_and_typedefs()).ok()
                })
                .map(|f| f.len().saturating_sub(1));
            if let Some(n) = args {
                out.tracepoint_args.insert(tp.to_string(), n);
            }
        }
        out
    }

    /// Whether a kernel function is in BTF (fentry can only attach to those).
    pub(crate) fn has_function(&self, name: &str) -> bool {
        self.functions.contains(name)
    }

    /// Linux 5.10 passes the request queue first to these block tracepoints.
    pub(crate) fn queue_first(&self, tracepoint: &str) -> bool {
        self.tracepoint_args.get(tracepoint).copied().unwrap_or(1) > 1
    }
}

pub(crate) fn kernel_btf() -> &'static KernelBtf {
    static BTF_FACTS: std::sync::OnceLock<KernelBtf> = std::sync::OnceLock::new();
    BTF_FACTS.get_or_init(KernelBtf::read)
}

/// The first name of a hook that exists here, or None.
pub(crate) fn resolve_hook(hook: &Hook) -> Option<&'static str> {
    match hook {
        Hook::Tracepoint(n) | Hook::BtfTracepoint(n) => {
            let events = tracefs_events().ok()?;
            events.join(n).is_dir().then_some(*n)
        }
        Hook::Fentry(f) => kernel_btf().has_function(f).then_some(*f),
        Hook::FirstOf(hooks) => hooks.iter().find_map(resolve_hook),
        // Whether the kernel has uprobes at all; the library itself is
        // found per process when the probe runs.
        Hook::Uprobe(f) => has_uprobes().then_some(*f),
    }
}

/// The kernel can attach uprobes: the perf uprobe PMU (libbpf's way), or
/// tracefs's legacy uprobe_events.
pub(crate) fn has_uprobes() -> bool {
    Path::new("/sys/bus/event_source/devices/uprobe/type").exists()
        || Path::new(TRACEFS).join("uprobe_events").exists()
        || Path::new(DEBUGFS_TRACING).join("uprobe_events").exists()
}

/// Why an implementation cannot run here (its missing hooks), or Ok.
pub fn implementation_support(imp: &Implementation) -> Result<(), String> {
    if !Path::new(BTF).exists() {
        return Err(format!(
            "kernel BTF ({BTF}) is missing: podscope's CO-RE probes need a kernel built with CONFIG_DEBUG_INFO_BTF=y"
        ));
    }
    if let Err(e) = tracefs_events() {
        return Err(e.to_string());
    }
    let missing: Vec<String> = imp
        .hooks
        .iter()
        .filter(|h| resolve_hook(h).is_none())
        .map(Hook::describe)
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!("this kernel lacks {}", missing.join(", ")))
    }
}

/// Checks a probe's hooks against tracefs and kernel BTF: supported if any
/// implementation has all its hooks. It does not load anything; whether the
/// kernel accepts a program (fentry may be refused) shows only when loading,
/// and `Tracer::new` then falls back to the next implementation.
pub fn probe_support(probe: ProbeKind) -> ProbeSupport {
    let mut reasons = Vec::new();
    for imp in probe.implementations() {
        match implementation_support(imp) {
            Ok(()) => return ProbeSupport::Supported,
            Err(r) => reasons.push(if probe.implementations().len() > 1 {
                format!("{}: {r}", imp.name)
            } else {
                r
            }),
        }
    }
    ProbeSupport::Unsupported(reasons.join("; "))
}

/// Whether tracing programs may call bpf_get_current_ancestor_cgroup_id()
/// (Linux 5.10 refuses it: the filter then reads the task's cgroup itself).
pub(crate) fn has_ancestor_cgroup_helper() -> bool {
    static HAS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *HAS.get_or_init(|| {
        // SAFETY: plain probe call; a null opts pointer is allowed.
        let rc = unsafe {
            libbpf_sys::libbpf_probe_bpf_helper(
                libbpf_sys::BPF_PROG_TYPE_TRACEPOINT,
                libbpf_sys::BPF_FUNC_get_current_ancestor_cgroup_id,
                std::ptr::null(),
            )
        };
        rc == 1
    })
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
