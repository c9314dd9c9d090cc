//! The probe catalogue: names users type, what each reports, which kernel hooks it needs.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// One kind of kernel activity podscope can trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProbeKind {
    /// Process execution (execsnoop).
    Exec,
    /// Process exit (exitsnoop).
    Exit,
    /// TCP connect, accept, close, retransmit, reset (tcpconnect/tcpaccept/tcplife/tcpretrans).
    Tcp,
    /// Block I/O with latency (biosnoop).
    Bio,
    /// Page-cache hits and misses per process (cachestat/cachetop).
    Cache,
    /// File opens (opensnoop).
    Open,
    /// HTTP/1.x and HTTP/2 requests from socket reads and writes (user-space parser).
    Http,
    /// DNS queries and answers over UDP/TCP port 53, and DNS over TLS (port
    /// 853, from the tls probe it brings along); user-space parser.
    Dns,
    /// TLS plaintext from uprobes on OpenSSL's libssl, parsed like `http`
    /// (which implies it: `trace http` reports HTTPS requests too).
    Tls,
    /// gRPC calls only: the http probe's kernel program and parser, with
    /// the requests that are not gRPC left out.
    Grpc,
    /// System calls (strace/syscount): one event per call, or per-container
    /// totals with `--summary`.
    Syscalls,
    /// Dropped packets (skb:kfree_skb): reason, where, pod, flow.
    Drop,
    /// A pod's packets through the stack (device queue, transmit, receive,
    /// drop): per-flow totals and stage latencies, or per packet.
    Net,
    /// Any kernel tracepoint, asked for as `tp:SUBSYSTEM:EVENT` (several at
    /// once): its raw record, fields decoded from tracefs. Not in
    /// [`ProbeKind::ALL`]: it is never asked for by its own name.
    Tracepoint,
}

/// How a probe attaches to the kernel, for feature detection and `podscope probes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    /// A classic tracepoint: `category/name` under tracefs `events/`.
    Tracepoint(&'static str),
    /// A BTF-typed tracepoint (`tp_btf`): needs kernel BTF and the raw tracepoint.
    BtfTracepoint(&'static str),
    /// fentry/fexit on a kernel function: the function must be in kernel BTF
    /// and the kernel must allow BPF trampolines (many do; some refuse).
    Fentry(&'static str),
    /// The first of these that exists (names that changed between kernels).
    FirstOf(&'static [Hook]),
    /// A uprobe (entry and return) on a function of a user-space library,
    /// `library:function`: needs the kernel's uprobe PMU; attached to each
    /// copy of the library the traced processes map.
    Uprobe(&'static str),
}

/// One way of implementing a probe on a kernel: the hooks it needs (all of
/// them) and what, if anything, it reports differently from the first way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Implementation {
    /// Short name shown by `podscope probes` and in events where it matters.
    pub name: &'static str,
    /// Every hook must exist.
    pub hooks: &'static [Hook],
    /// How its results differ, or why it is the preferred one.
    pub note: &'static str,
}

impl Hook {
    /// `tracepoint:sched/sched_process_exec` style text.
    pub fn describe(&self) -> String {
        match self {
            Hook::Tracepoint(n) => format!("tracepoint:{n}"),
            Hook::BtfTracepoint(n) => format!("tp_btf:{n}"),
            Hook::Fentry(f) => format!("fentry:{f}"),
            Hook::Uprobe(f) => format!("uprobe:{f}"),
            Hook::FirstOf(hooks) => hooks
                .iter()
                .map(Hook::describe)
                .collect::<Vec<_>>()
                .join("|"),
        }
    }
}

impl ProbeKind {
    /// Every probe, in the order `podscope probes` lists them.
    pub const ALL: [ProbeKind; 13] = [
        ProbeKind::Exec,
        ProbeKind::Exit,
        ProbeKind::Tcp,
        ProbeKind::Bio,
        ProbeKind::Cache,
        ProbeKind::Open,
        ProbeKind::Http,
        ProbeKind::Dns,
        ProbeKind::Tls,
        ProbeKind::Grpc,
        ProbeKind::Syscalls,
        ProbeKind::Drop,
        ProbeKind::Net,
    ];

    /// The probe whose kernel program this one runs: itself, except `grpc`,
    /// which is a view of `http` (loaded once if both are asked for).
    pub fn kernel_probe(self) -> ProbeKind {
        match self {
            ProbeKind::Grpc => ProbeKind::Http,
            p => p,
        }
    }

    /// The name users type on the command line and see in output.
    pub fn name(self) -> &'static str {
        match self {
            ProbeKind::Exec => "exec",
            ProbeKind::Exit => "exit",
            ProbeKind::Tcp => "tcp",
            ProbeKind::Bio => "bio",
            ProbeKind::Cache => "cache",
            ProbeKind::Open => "open",
            ProbeKind::Http => "http",
            ProbeKind::Dns => "dns",
            ProbeKind::Tls => "tls",
            ProbeKind::Grpc => "grpc",
            ProbeKind::Syscalls => "syscalls",
            ProbeKind::Tracepoint => "tracepoint",
            ProbeKind::Drop => "drop",
            ProbeKind::Net => "net",
        }
    }

    /// One line on what the probe reports.
    pub fn description(self) -> &'static str {
        match self {
            ProbeKind::Exec => "process execs: filename, argv, ppid, uid, result (failed execs too)",
            ProbeKind::Exit => "process exits: exit code or signal, lifetime",
            ProbeKind::Tcp => {
                "TCP connect/accept/close with lifetime and bytes, failed connects, retransmits, resets; IPv4+IPv6"
            }
            ProbeKind::Bio => "block I/O: disk, op, sector, bytes, latency; attributed to the submitter",
            ProbeKind::Cache => {
                "page cache per process per interval: hits, misses, dirtied, hit ratio"
            }
            ProbeKind::Open => "file opens: path, flags, fd or errno",
            ProbeKind::Http => {
                "HTTP/1.x and HTTP/2 (h2c) requests served and made: method, path (query redacted), status, duration, sizes, peer"
            }
            ProbeKind::Grpc => {
                "gRPC calls over HTTP/2 (h2c, and inside TLS with tls) served and made: service, method, grpc-status and message, duration, sizes, peer"
            }
            ProbeKind::Dns => {
                "DNS lookups made and answered over UDP and TCP port 53, and TLS port 853 (with tls): name, type, rcode, answers, latency"
            }
            ProbeKind::Syscalls => {
                "system calls: name, decoded arguments, result or errno, duration per thread (--syscall, --errors-only); --summary: per container count, errors, latency"
            }
            ProbeKind::Tls => {
                "HTTPS: HTTP/1.x and HTTP/2 inside OpenSSL (libssl 1.1/3.x) or Go crypto/tls TLS, from its plaintext; part of http and grpc"
            }
            ProbeKind::Drop => {
                "dropped packets: drop reason (kernel's names), where, pod (by socket, netns or address), flow; IPv4+IPv6"
            }
            ProbeKind::Net => {
                "packet path: pod eth0 -> host veth -> peer, per flow (packets, bytes, drops, stage latency p50/p99) or per packet (--per-packet, --flow)"
            }
            ProbeKind::Tracepoint => {
                "any kernel tracepoint (tp:SUBSYSTEM:EVENT): its record's fields decoded from tracefs; --filter in the kernel"
            }
        }
    }

    /// The ways this probe can be implemented, best first. At start-up the
    /// first one whose hooks exist and that the kernel accepts is used.
    pub fn implementations(self) -> &'static [Implementation] {
        use Hook::*;
        const SYSCALL_EXEC: [Hook; 5] = [
            Tracepoint("sched/sched_process_exec"),
            Tracepoint("syscalls/sys_enter_execve"),
            Tracepoint("syscalls/sys_exit_execve"),
            Tracepoint("syscalls/sys_enter_execveat"),
            Tracepoint("syscalls/sys_exit_execveat"),
        ];
        const DIRTIED: Hook = FirstOf(&[
            Tracepoint("writeback/writeback_dirty_folio"),
            Tracepoint("writeback/writeback_dirty_page"),
        ]);
        match self {
            ProbeKind::Exec => &[Implementation {
                name: "tracepoints",
                hooks: &SYSCALL_EXEC,
                note: "",
            }],
            ProbeKind::Exit => &[Implementation {
                name: "tracepoints",
                hooks: &[Tracepoint("sched/sched_process_exit")],
                note: "",
            }],
            ProbeKind::Tcp => &[Implementation {
                name: "tracepoints",
                hooks: &[
                    BtfTracepoint("sock/inet_sock_set_state"),
                    Tracepoint("syscalls/sys_exit_accept4"),
                    Tracepoint("syscalls/sys_exit_accept"),
                    BtfTracepoint("tcp/tcp_destroy_sock"),
                    BtfTracepoint("tcp/tcp_retransmit_skb"),
                    BtfTracepoint("tcp/tcp_send_reset"),
                    BtfTracepoint("tcp/tcp_receive_reset"),
                ],
                note: "bytes from the socket's sequence counters at close (all send/receive paths, splice and sendfile included)",
            }],
            ProbeKind::Bio => &[
                Implementation {
                    name: "block_io_start",
                    hooks: &[
                        BtfTracepoint("block/block_io_start"),
                        BtfTracepoint("block/block_rq_issue"),
                        BtfTracepoint("block/block_rq_merge"),
                        BtfTracepoint("block/block_rq_complete"),
                    ],
                    note: "Linux 6.5+: the request itself at submission",
                },
                Implementation {
                    name: "block_getrq",
                    hooks: &[
                        BtfTracepoint("block/block_getrq"),
                        BtfTracepoint("block/block_rq_issue"),
                        BtfTracepoint("block/block_rq_merge"),
                        BtfTracepoint("block/block_rq_complete"),
                    ],
                    note: "older kernels: the request's first bio at submission; a request whose first bio \
                           was front-merged later is not attributed",
                },
            ],
            ProbeKind::Cache => &[
                Implementation {
                    name: "fentry",
                    hooks: &[
                        FirstOf(&[Fentry("folio_mark_accessed"), Fentry("mark_page_accessed")]),
                        FirstOf(&[Fentry("filemap_add_folio"), Fentry("add_to_page_cache_lru")]),
                        DIRTIED,
                    ],
                    note: "exact: page accesses as the kernel marks them",
                },
                Implementation {
                    name: "tracepoints",
                    hooks: &[
                        BtfTracepoint("filemap/mm_filemap_get_pages"),
                        Tracepoint("filemap/mm_filemap_map_pages"),
                        Tracepoint("filemap/mm_filemap_fault"),
                        Tracepoint("filemap/mm_filemap_add_to_page_cache"),
                        DIRTIED,
                    ],
                    note: "where fentry is refused: lookups counted on the read and fault paths (approximate)",
                },
            ],
            ProbeKind::Open => &[Implementation {
                name: "tracepoints",
                hooks: &[
                    Tracepoint("syscalls/sys_enter_open"),
                    Tracepoint("syscalls/sys_exit_open"),
                    Tracepoint("syscalls/sys_enter_openat"),
                    Tracepoint("syscalls/sys_exit_openat"),
                    Tracepoint("syscalls/sys_enter_openat2"),
                    Tracepoint("syscalls/sys_exit_openat2"),
                ],
                note: "",
            }],
            ProbeKind::Syscalls => &[Implementation {
                name: "raw_syscalls",
                hooks: &[
                    Tracepoint("raw_syscalls/sys_enter"),
                    Tracepoint("raw_syscalls/sys_exit"),
                ],
                note: "one program pair for every system call, filtered in the kernel by number",
            }],
            ProbeKind::Tracepoint => &[Implementation {
                name: "tracepoint",
                hooks: &[],
                note: "one program attached to each tracepoint asked for; the record's common_type tells them apart (every kernel)",
            }],
            ProbeKind::Drop => &[Implementation {
                name: "tracepoint",
                hooks: &[Tracepoint("skb/kfree_skb")],
                note: "the drop reason from Linux 5.17 (before: reason unknown, the freeing location says where)",
            }],
            ProbeKind::Net => &[Implementation {
                name: "tracepoints",
                hooks: &[
                    Tracepoint("net/net_dev_queue"),
                    Tracepoint("net/net_dev_xmit"),
                    Tracepoint("net/netif_receive_skb"),
                    Tracepoint("net/napi_gro_receive_entry"),
                    Tracepoint("skb/kfree_skb"),
                ],
                note: "no socket or IP-layer stage (no skb tracepoint there; kprobes would be needed); drop reasons from 5.17",
            }],
            ProbeKind::Http | ProbeKind::Grpc => &[Implementation {
                name: "tracepoints",
                hooks: &[
                    Tracepoint("syscalls/sys_enter_read"),
                    Tracepoint("syscalls/sys_exit_read"),
                    Tracepoint("syscalls/sys_enter_write"),
                    Tracepoint("syscalls/sys_exit_write"),
                    Tracepoint("syscalls/sys_enter_readv"),
                    Tracepoint("syscalls/sys_exit_readv"),
                    Tracepoint("syscalls/sys_enter_writev"),
                    Tracepoint("syscalls/sys_exit_writev"),
                    Tracepoint("syscalls/sys_enter_recvfrom"),
                    Tracepoint("syscalls/sys_exit_recvfrom"),
                    Tracepoint("syscalls/sys_enter_sendto"),
                    Tracepoint("syscalls/sys_exit_sendto"),
                    Tracepoint("syscalls/sys_enter_recvmsg"),
                    Tracepoint("syscalls/sys_exit_recvmsg"),
                    Tracepoint("syscalls/sys_enter_sendmsg"),
                    Tracepoint("syscalls/sys_exit_sendmsg"),
                    Tracepoint("syscalls/sys_enter_sendfile64"),
                    Tracepoint("syscalls/sys_exit_sendfile64"),
                    Tracepoint("syscalls/sys_enter_close"),
                    BtfTracepoint("tcp/tcp_destroy_sock"),
                ],
                note: "plaintext HTTP/1.x and HTTP/2 (h2c) over TCP; the first bytes of each message are copied (--http-capture-bytes)",
            }],
            ProbeKind::Dns => &[Implementation {
                name: "tracepoints",
                hooks: &[
                    Tracepoint("syscalls/sys_enter_read"),
                    Tracepoint("syscalls/sys_exit_read"),
                    Tracepoint("syscalls/sys_enter_write"),
                    Tracepoint("syscalls/sys_exit_write"),
                    Tracepoint("syscalls/sys_enter_recvfrom"),
                    Tracepoint("syscalls/sys_exit_recvfrom"),
                    Tracepoint("syscalls/sys_enter_sendto"),
                    Tracepoint("syscalls/sys_exit_sendto"),
                    Tracepoint("syscalls/sys_enter_recvmsg"),
                    Tracepoint("syscalls/sys_exit_recvmsg"),
                    Tracepoint("syscalls/sys_enter_sendmsg"),
                    Tracepoint("syscalls/sys_exit_sendmsg"),
                    Tracepoint("syscalls/sys_enter_sendmmsg"),
                    Tracepoint("syscalls/sys_exit_sendmmsg"),
                ],
                note: "UDP only; messages up to 1 KiB are copied whole",
            }],
            ProbeKind::Tls => &[Implementation {
                name: "uprobes",
                hooks: &[
                    Uprobe("libssl:SSL_read"),
                    Uprobe("libssl:SSL_write"),
                    Uprobe("libssl:SSL_read_ex"),
                    Uprobe("libssl:SSL_write_ex"),
                    Uprobe("libssl:SSL_do_handshake"),
                    Tracepoint("syscalls/sys_enter_read"),
                    Tracepoint("syscalls/sys_enter_write"),
                    Tracepoint("syscalls/sys_enter_readv"),
                    Tracepoint("syscalls/sys_enter_writev"),
                    Tracepoint("syscalls/sys_enter_recvfrom"),
                    Tracepoint("syscalls/sys_enter_sendto"),
                    Tracepoint("syscalls/sys_enter_recvmsg"),
                    Tracepoint("syscalls/sys_enter_sendmsg"),
                    Tracepoint("syscalls/sys_enter_close"),
                    Tracepoint("sched/sched_process_exec"),
                    BtfTracepoint("tcp/tcp_destroy_sock"),
                ],
                note: "dynamically linked OpenSSL 1.1/3.x, attached to each libssl file the traced processes map; \
                       the socket from the syscall made inside the SSL call",
            }],
        }
    }

    /// Probes this one brings along: asking for `http` (or `grpc`) also
    /// loads `tls`, so requests and calls over TLS are reported as well,
    /// and `dns` too, for DNS over TLS.
    pub fn implies(self) -> &'static [ProbeKind] {
        match self {
            ProbeKind::Http | ProbeKind::Grpc | ProbeKind::Dns => &[ProbeKind::Tls],
            _ => &[],
        }
    }

    /// `probes` with what they imply added after them, without duplicates.
    pub fn with_implied(probes: &[ProbeKind]) -> Vec<ProbeKind> {
        let mut out = probes.to_vec();
        for p in probes {
            for q in p.implies() {
                if !out.contains(q) {
                    out.push(*q);
                }
            }
        }
        out
    }

    /// Every hook any implementation of the probe may use.
    pub fn hooks(self) -> Vec<Hook> {
        let mut out: Vec<Hook> = Vec::new();
        for imp in self.implementations() {
            for h in imp.hooks {
                if !out.contains(h) {
                    out.push(*h);
                }
            }
        }
        out
    }

    /// Parses a comma-separated list such as `exec,tcp` (or `all`), without duplicates.
    pub fn parse_list(s: &str) -> Result<Vec<ProbeKind>, UnknownProbe> {
        let mut out = Vec::new();
        let parts: Vec<&str> = s.split(',').map(str::trim).collect();
        // `exec,,tcp` or a trailing comma: most likely a probe left out.
        if parts.len() > 1 && parts.iter().any(|p| p.is_empty()) {
            return Err(UnknownProbe(String::new()));
        }
        for part in parts.into_iter().filter(|p| !p.is_empty()) {
            if part == "all" {
                // Not syscalls (a stream of every system call) nor net (a
                // record per packet and device): both are asked for by name.
                return Ok(ProbeKind::ALL
                    .into_iter()
                    .filter(|p| !matches!(p, ProbeKind::Syscalls | ProbeKind::Net))
                    .collect());
            }
            let p: ProbeKind = part.parse()?;
            if !out.contains(&p) {
                out.push(p);
            }
        }
        if out.is_empty() {
            return Err(UnknownProbe(s.to_string()));
        }
        Ok(out)
    }
}

impl fmt::Display for ProbeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A probe name that is not in the catalogue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownProbe(pub String);

impl UnknownProbe {
    /// The closest valid name, if any is close enough to be a likely typo.
    pub fn suggestion(&self) -> Option<&'static str> {
        ProbeKind::ALL
            .iter()
            .map(|p| (p.name(), edit_distance(p.name(), &self.0)))
            .filter(|(_, d)| *d <= 2)
            .min_by_key(|(_, d)| *d)
            .map(|(n, _)| n)
    }
}

impl fmt::Display for UnknownProbe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let valid: Vec<&str> = ProbeKind::ALL.iter().map(|p| p.name()).collect();
        if self.0.is_empty() {
            return write!(
                f,
                "an empty probe name in the list (two commas in a row, or one at an end?); \
                 valid probes: {} (or 'all'), e.g. exec,tcp",
                valid.join(", ")
            );
        }
        write!(f, "unknown probe '{}'", self.0)?;
        if let Some(s) = self.suggestion() {
            write!(f, " (did you mean '{s}'?)")?;
        }
        write!(f, "; valid probes: {} (or 'all')", valid.join(", "))
    }
}

impl std::error::Error for UnknownProbe {}

impl FromStr for ProbeKind {
    type Err = UnknownProbe;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ProbeKind::ALL
            .iter()
            .copied()
            .find(|p| p.name() == s)
            .ok_or_else(|| UnknownProbe(s.to_string()))
    }
}

/// Levenshtein distance; names here are a few bytes long.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur.push((prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lists_and_all() {
        assert_eq!(
            ProbeKind::parse_list("exec,tcp").unwrap(),
            vec![ProbeKind::Exec, ProbeKind::Tcp]
        );
        assert_eq!(
            ProbeKind::parse_list("exec,exec").unwrap(),
            vec![ProbeKind::Exec]
        );
        // Every probe but syscalls and net, which are asked for by name.
        let all = ProbeKind::parse_list("all").unwrap();
        assert_eq!(all.len(), ProbeKind::ALL.len() - 2);
        assert!(!all.contains(&ProbeKind::Syscalls));
        assert!(!all.contains(&ProbeKind::Net));
    }

    #[test]
    fn unknown_probe_lists_valid_ones_and_suggests() {
        let err = ProbeKind::parse_list("exec,tpc").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("unknown probe 'tpc'"), "{msg}");
        assert!(msg.contains("did you mean 'tcp'"), "{msg}");
        assert!(
            msg.contains("exec, exit, tcp, bio, cache, open, http, dns, tls, grpc"),
            "{msg}"
        );
        let far = ProbeKind::parse_list("kubernetes").unwrap_err();
        assert!(far.suggestion().is_none());
    }

    #[test]
    fn empty_names_in_a_list_are_refused() {
        for list in ["exec,,tcp", "exec,", ",tcp"] {
            let msg = ProbeKind::parse_list(list).unwrap_err().to_string();
            assert!(msg.contains("an empty probe name"), "{list}: {msg}");
        }
    }
}
