//! The hook kinds a trace session can use, with their argument schemas: one
//! typed catalogue that `podscope hooks` prints and the hub serves.

use serde::Serialize;

use crate::ProbeKind;

/// The type of a hook argument, as JSON names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ArgType {
    /// A JSON string.
    String,
    /// A JSON array of strings (on the command line: comma-separated).
    StringList,
    /// true or false (on the command line: a flag).
    Bool,
    /// A duration such as `5s` or `500ms`.
    Duration,
    /// A non-negative integer.
    Integer,
}

impl ArgType {
    /// The name shown in `podscope hooks`.
    pub fn name(self) -> &'static str {
        match self {
            ArgType::String => "string",
            ArgType::StringList => "string list",
            ArgType::Bool => "bool",
            ArgType::Duration => "duration",
            ArgType::Integer => "integer",
        }
    }
}

/// One argument of a hook kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct HookArg {
    /// The key in a session's `hook.args` object.
    pub name: &'static str,
    /// Its JSON type.
    #[serde(rename = "type")]
    pub ty: ArgType,
    /// Must be given.
    pub required: bool,
    /// The `podscope trace` flag that sets it.
    pub flag: &'static str,
    /// What it does.
    pub description: &'static str,
    /// An example value, as JSON.
    pub example: &'static str,
}

/// One kind of hook a session can trace with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HookKind {
    /// The `hook.kind` of a session (`syscalls`, `tracepoint`, `exec`, ...).
    pub kind: &'static str,
    /// What it reports.
    pub description: &'static str,
    /// How to ask for it with `podscope trace`.
    pub usage: &'static str,
    /// Its arguments (none for most probes).
    pub args: &'static [HookArg],
}

const SYSCALLS_ARGS: &[HookArg] = &[
    HookArg {
        name: "syscall",
        ty: ArgType::StringList,
        required: false,
        flag: "--syscall",
        description: "only these system calls, by this architecture's names; default every call",
        example: r#"["openat","connect"]"#,
    },
    HookArg {
        name: "errors_only",
        ty: ArgType::Bool,
        required: false,
        flag: "--errors-only",
        description: "only calls that returned -errno (decided in the kernel)",
        example: "true",
    },
    HookArg {
        name: "summary",
        ty: ArgType::Bool,
        required: false,
        flag: "--summary",
        description: "no event per call: per container and syscall, calls, errors, total/avg/p99 latency, aggregated in the kernel",
        example: "true",
    },
    HookArg {
        name: "interval",
        ty: ArgType::Duration,
        required: false,
        flag: "--interval",
        description: "with summary: how often the totals are reported (default 1s)",
        example: r#""5s""#,
    },
];

const TRACEPOINT_ARGS: &[HookArg] = &[
    HookArg {
        name: "name",
        ty: ArgType::StringList,
        required: true,
        flag: "tp:SUBSYSTEM:EVENT",
        description: "tracepoints as SUBSYSTEM:EVENT (see `podscope probes --tracepoints`)",
        example: r#"["sched:sched_process_fork","net:net_dev_xmit"]"#,
    },
    HookArg {
        name: "filter",
        ty: ArgType::String,
        required: false,
        flag: "--filter",
        description:
            "FIELD OP VALUE joined by && and || (&& binds tighter, at most 4), OP one of == != < <= > >= (strings: == and != only), \
                      FIELD[N] for an element of an integer array; EVENT: before a clause makes it \
                      that tracepoint's, clauses joined by ;. Evaluated in the kernel on each \
                      tracepoint that has the fields",
        example: r#""len > 1000 && name == \"eth0\"""#,
    },
    HookArg {
        name: "all",
        ty: ArgType::Bool,
        required: false,
        flag: "--all",
        description:
            "the pod filter uses the current task's cgroup; events in softirq or kernel-thread \
                      context (net_dev_xmit, block completions) need a node-wide trace",
        example: "true",
    },
];

const FTRACE_ARGS: &[HookArg] = &[
    HookArg {
        name: "name",
        ty: ArgType::StringList,
        required: true,
        flag: "ftrace:SUBSYSTEM:EVENT",
        description: "tracepoints as SUBSYSTEM:EVENT, traced through a tracefs instance (no BPF)",
        example: r#"["sched:sched_process_fork","syscalls:sys_exit_openat"]"#,
    },
    HookArg {
        name: "filter",
        ty: ArgType::String,
        required: false,
        flag: "--filter",
        description: "the tracepoint hook's filter syntax and checks, written to each event's \
                      ftrace filter file (ftrace drops what it rejects before buffering); no \
                      array elements",
        example: r#""parent_pid != 1 || child_pid > 1000""#,
    },
    HookArg {
        name: "buffer_size",
        ty: ArgType::String,
        required: false,
        flag: "--ring-buffer-size",
        description: "the instance's buffer per CPU on each node: bytes or K/M/G, a power of \
                      two from 4K to 1G (default ftrace's own, 1408 KiB; a storm that \
                      outruns the reader loses records, counted)",
        example: r#""64M""#,
    },
];

/// The `ftrace` hook kind: tracepoints without BPF (local traces and hub sessions).
pub const FTRACE: &str = "ftrace";

const HTTP_ARGS: &[HookArg] = &[HookArg {
    name: "capture_bytes",
    ty: ArgType::Integer,
    required: false,
    flag: "--http-capture-bytes",
    description: "bytes of each socket message copied for parsing (1..16384, default 1024)",
    example: "4096",
}];

/// Every hook kind: `syscalls`, `tracepoint`, then the other probes in
/// [`ProbeKind::ALL`] order.
pub fn hook_kinds() -> Vec<HookKind> {
    let mut out = vec![
        HookKind {
            kind: ProbeKind::Syscalls.name(),
            description: ProbeKind::Syscalls.description(),
            usage: "podscope trace syscalls [--syscall LIST] [--errors-only | --summary [--interval D]]",
            args: SYSCALLS_ARGS,
        },
        HookKind {
            kind: ProbeKind::Tracepoint.name(),
            description: ProbeKind::Tracepoint.description(),
            usage: "podscope trace tp:SUBSYSTEM:EVENT[,tp:...] [--filter 'FIELD OP VALUE && ... || ...']",
            args: TRACEPOINT_ARGS,
        },
        HookKind {
            kind: FTRACE,
            description: "Tracepoints without BPF, for kernels or machines where BPF is not \
                          allowed: a tracefs instance of the trace's own, the pods' tasks \
                          followed by set_event_pid and event-fork (container-tracer's \
                          mechanism); records as the tracepoint probe's, parsed from trace_pipe. \
                          Alone in its trace or session (no other probe or hook); in hub \
                          sessions each node runs it in an instance of its own.",
            usage: "podscope trace ftrace:SUBSYSTEM:EVENT[,ftrace:...] (--pod/-n/-A | --pid | --cgroup | --all) [--filter 'FIELD OP VALUE && ... || ...'] [--ring-buffer-size BYTES]",
            args: FTRACE_ARGS,
        },
    ];
    for p in ProbeKind::ALL {
        if p == ProbeKind::Syscalls {
            continue;
        }
        out.push(HookKind {
            kind: p.name(),
            description: p.description(),
            usage: probe_usage(p),
            args: if matches!(p, ProbeKind::Http | ProbeKind::Grpc | ProbeKind::Dns) {
                HTTP_ARGS
            } else {
                &[]
            },
        });
    }
    out
}

fn probe_usage(p: ProbeKind) -> &'static str {
    match p {
        ProbeKind::Exec => "podscope trace exec",
        ProbeKind::Exit => "podscope trace exit",
        ProbeKind::Tcp => "podscope trace tcp",
        ProbeKind::Bio => "podscope trace bio",
        ProbeKind::Cache => "podscope trace cache [--interval D]",
        ProbeKind::Open => "podscope trace open",
        ProbeKind::Http => "podscope trace http [--http-capture-bytes N]",
        ProbeKind::Dns => "podscope trace dns",
        ProbeKind::Tls => "podscope trace tls",
        ProbeKind::Grpc => "podscope trace grpc",
        ProbeKind::Syscalls => "podscope trace syscalls",
        ProbeKind::Tracepoint => "podscope trace tp:SUBSYSTEM:EVENT",
        ProbeKind::Drop => "podscope trace drop",
        ProbeKind::Net => "podscope trace net",
    }
}

/// The hook kind by name.
pub fn hook_kind(kind: &str) -> Option<HookKind> {
    hook_kinds().into_iter().find(|h| h.kind == kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_probe_is_a_hook_once() {
        let kinds = hook_kinds();
        for p in ProbeKind::ALL {
            assert_eq!(
                kinds.iter().filter(|h| h.kind == p.name()).count(),
                1,
                "{p}"
            );
        }
        assert!(hook_kind("tracepoint")
            .unwrap()
            .args
            .iter()
            .any(|a| a.required));
        let json = serde_json::to_value(hook_kind("syscalls").unwrap()).unwrap();
        assert_eq!(json["args"][0]["name"], "syscall");
        assert_eq!(json["args"][0]["type"], "string_list");
        // Every example is valid JSON.
        for h in &kinds {
            for a in h.args {
                serde_json::from_str::<serde_json::Value>(a.example)
                    .unwrap_or_else(|e| panic!("{} {}: {e}", h.kind, a.name));
            }
        }
    }
}
