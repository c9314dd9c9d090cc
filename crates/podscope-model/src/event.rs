//! One traced kernel event, as every stage after decoding sees it, and its
//! JSON form (documented in docs/json-schema.md).

use std::borrow::Cow;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::ProbeKind;

/// Wall-clock time of an event, in nanoseconds since the Unix epoch.
/// Serialized as RFC 3339 with nanoseconds (`2026-11-22T03:15:14.123456789Z`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Timestamp(pub u64);

impl Timestamp {
    /// The current wall-clock time.
    pub fn now() -> Self {
        Timestamp(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0),
        )
    }

    /// RFC 3339, UTC, nanosecond precision.
    pub fn rfc3339(self) -> String {
        humantime::format_rfc3339_nanos(UNIX_EPOCH + Duration::from_nanos(self.0)).to_string()
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.rfc3339())
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let t = humantime::parse_rfc3339(&s).map_err(serde::de::Error::custom)?;
        let ns = t
            .duration_since(UNIX_EPOCH)
            .map_err(serde::de::Error::custom)?
            .as_nanos() as u64;
        Ok(Timestamp(ns))
    }
}

/// Who an event belongs to in Kubernetes terms; empty for host processes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// Node name.
    #[serde(skip_serializing_if = "String::is_empty", default)]
    pub node: String,
    /// Pod namespace.
    #[serde(skip_serializing_if = "String::is_empty", default)]
    pub namespace: String,
    /// Pod name.
    #[serde(skip_serializing_if = "String::is_empty", default)]
    pub pod: String,
    /// Pod uid.
    #[serde(skip_serializing_if = "String::is_empty", default)]
    pub pod_uid: String,
    /// Container name.
    #[serde(skip_serializing_if = "String::is_empty", default)]
    pub container: String,
    /// Container id.
    #[serde(skip_serializing_if = "String::is_empty", default)]
    pub container_id: String,
    /// Container image.
    #[serde(skip_serializing_if = "String::is_empty", default)]
    pub image: String,
}

/// One event: who did it, when, and the probe-specific part.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// When it happened (kernel monotonic clock mapped to wall time).
    pub timestamp: Timestamp,
    /// Kubernetes identity, filled by the enrich stage when known.
    #[serde(flatten)]
    pub identity: Identity,
    /// Process (thread-group) id.
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    /// Real uid of the task.
    pub uid: u32,
    /// Task command name (at most 15 bytes, as the kernel keeps it).
    pub comm: String,
    /// cgroup v2 id of the task (or of the socket's owner).
    pub cgroup_id: u64,
    /// The probe and its fields.
    #[serde(flatten)]
    pub data: EventData,
}

impl Event {
    /// Which probe produced the event.
    pub fn probe(&self) -> ProbeKind {
        match &self.data {
            EventData::Exec(_) => ProbeKind::Exec,
            EventData::Exit(_) => ProbeKind::Exit,
            EventData::Tcp(_) => ProbeKind::Tcp,
            EventData::Bio(_) => ProbeKind::Bio,
            EventData::Cache(_) => ProbeKind::Cache,
            EventData::Open(_) => ProbeKind::Open,
            EventData::Syscall(_) | EventData::SyscallSummary(_) => ProbeKind::Syscalls,
            EventData::SockData(d) if d.protocol.starts_with("dns") => ProbeKind::Dns,
            EventData::SockData(d) if d.tls => ProbeKind::Tls,
            EventData::SockData(_) | EventData::Http(_) => ProbeKind::Http,
            EventData::Dns(_) => ProbeKind::Dns,
            EventData::Tracepoint(_) => ProbeKind::Tracepoint,
            EventData::Drop(_) => ProbeKind::Drop,
            EventData::NetPacket(_) | EventData::NetFlow(_) => ProbeKind::Net,
        }
    }

    /// The event kind within its probe (`connect`, `close`, ...), or the probe name.
    pub fn kind(&self) -> &'static str {
        match &self.data {
            EventData::Tcp(t) => t.kind.name(),
            EventData::Exec(_) => "exec",
            EventData::Exit(_) => "exit",
            EventData::Bio(_) => "io",
            EventData::Cache(_) => "interval",
            EventData::Open(_) => "open",
            EventData::Syscall(_) => "call",
            EventData::SyscallSummary(_) => "totals",
            EventData::SockData(d) => d.kind.name(),
            EventData::Http(h) if h.kind == "parse_error" => "parse_error",
            EventData::Http(_) => "request",
            EventData::Dns(_) => "query",
            EventData::Tracepoint(_) => "record",
            EventData::Drop(_) => "drop",
            EventData::NetPacket(_) => "packet",
            EventData::NetFlow(_) => "flow",
        }
    }
}

/// The probe-specific part, tagged by `probe` in JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "probe", rename_all = "snake_case")]
pub enum EventData {
    /// From the exec probe.
    Exec(ExecEvent),
    /// From the exit probe.
    Exit(ExitEvent),
    /// From the tcp probe.
    Tcp(TcpEvent),
    /// From the bio probe.
    Bio(BioEvent),
    /// From the cache probe.
    Cache(CacheEvent),
    /// From the open probe.
    Open(OpenEvent),
    /// From the syscalls probe: one completed system call.
    #[serde(rename = "syscalls")]
    Syscall(SyscallEvent),
    /// From the syscalls probe with `--summary`: one syscall's totals in one
    /// cgroup since tracing started (kind `totals`: `summary` is the
    /// end-of-trace record's).
    #[serde(rename = "syscalls_totals")]
    SyscallSummary(SyscallSummaryEvent),
    /// From the http probe: one socket read or write (raw, before parsing).
    /// The parser stage turns these into [`EventData::Http`]; they reach the
    /// output only where no parser runs, and never with their payload.
    #[serde(rename = "http_data")]
    SockData(SockDataEvent),
    /// From the http probe: one request and its response.
    Http(Box<HttpEvent>),
    /// From the dns probe: one query and its answer.
    Dns(Box<DnsEvent>),
    /// From the tracepoint probe: one record of a tracepoint (`tp:SUBSYSTEM:EVENT`).
    Tracepoint(TracepointEvent),
    /// From the drop probe: one packet the kernel dropped.
    Drop(Box<DropEvent>),
    /// From the net probe (`--per-packet`, `--flow`): one packet at one stage.
    #[serde(rename = "net")]
    NetPacket(Box<NetPacketEvent>),
    /// From the net probe: one flow's totals since the start, every interval
    /// and at the end.
    #[serde(rename = "net_flows")]
    NetFlow(NetFlowEvent),
}

/// One packet of a pod at one stage of the network stack (net probe).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NetPacketEvent {
    /// Always `packet`.
    #[serde(default)]
    pub kind: String,
    /// The packet's number: the same in each of its records.
    pub packet: u64,
    /// Its sk_buff's address (hex): the same across veth and bridge.
    pub skb: String,
    /// `WHERE_WHAT`: where is `pod` (a device in the pod's netns), `veth`
    /// (the pod's host-side veth), `host` (another host device: the bridge,
    /// another pod's veth, a NIC) or `peer` (a device in another netns);
    /// what is `queue`, `xmit`, `recv` or `gro`. Or `drop`.
    pub stage: String,
    /// The device (`eth0`, `veth1a2b3c`, `lo`).
    #[serde(skip_serializing_if = "String::is_empty", default)]
    pub ifname: String,
    /// Its index in its netns.
    pub ifindex: u32,
    /// Inode of the device's network namespace.
    pub netns: u32,
    /// skb->len at this stage (link-layer header included on transmit).
    pub len: u32,
    /// True at the packet's first stage (where it was counted).
    pub first: bool,
    /// Nanoseconds since the packet's previous stage (0 at the first).
    pub step_ns: u64,
    /// Nanoseconds since its first stage.
    pub total_ns: u64,
    /// `tcp`, `udp`, `icmp`, ... (empty without an IP header).
    pub protocol: String,
    /// `ipv4`, `ipv6` or empty.
    pub family: String,
    /// Source address.
    pub saddr: String,
    /// Destination address.
    pub daddr: String,
    /// Source port (TCP, UDP).
    pub sport: u16,
    /// Destination port.
    pub dport: u16,
    /// TCP flags (`SYN`, `PSH|ACK`), TCP only.
    #[serde(skip_serializing_if = "String::is_empty", default)]
    pub tcp_flags: String,
    /// The IP header's length of the packet.
    pub ip_len: u32,
    /// `drop` only: the kernel's drop reason (as the drop probe names it).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub reason: Option<String>,
    /// `drop` only: the freeing location, `symbol+0xoff`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub location: Option<String>,
}

/// One stage of a flow's packets (net probe summaries).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NetStage {
    /// The stage (see [`NetPacketEvent::stage`]).
    pub stage: String,
    /// Packets of the flow that reached it.
    pub packets: u64,
    /// Time from the packet's previous stage: median and 99th percentile
    /// (upper bounds of log2 buckets, in ns).
    pub step_p50_ns: u64,
    /// 99th percentile of the same.
    pub step_p99_ns: u64,
    /// Time from the packet's first stage to this one, median (bucket bound, ns).
    pub total_p50_ns: u64,
    /// 99th percentile of the same.
    pub total_p99_ns: u64,
}

/// A flow's totals since the trace started (net probe).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NetFlowEvent {
    /// Always `flow`.
    #[serde(default)]
    pub kind: String,
    /// `tcp`, `udp`, `icmp`, ... (empty: not IP).
    pub protocol: String,
    /// `ipv4`, `ipv6` or empty.
    pub family: String,
    /// Source address.
    pub saddr: String,
    /// Destination address.
    pub daddr: String,
    /// Source port.
    pub sport: u16,
    /// Destination port.
    pub dport: u16,
    /// Packets counted (once each, at their first stage).
    pub packets: u64,
    /// Their IP lengths summed.
    pub bytes: u64,
    /// Of them, dropped (skb:kfree_skb).
    pub drops: u64,
    /// Nanoseconds from the flow's first packet to its last stage seen.
    pub duration_ns: u64,
    /// Since-first time at the flow's furthest stage (the one with the
    /// largest median): median, bucket bound in ns.
    pub end_to_end_p50_ns: u64,
    /// 99th percentile of the same.
    pub end_to_end_p99_ns: u64,
    /// The stages its packets reached, in path order.
    pub stages: Vec<NetStage>,
}

/// One packet the kernel freed as dropped (`skb:kfree_skb`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DropEvent {
    /// Always `drop`.
    #[serde(default)]
    pub kind: String,
    /// The kernel's drop reason without its `SKB_DROP_REASON_` prefix
    /// (`NO_SOCKET`, `NETFILTER_DROP`, `NOT_SPECIFIED`), named from the
    /// running kernel's `enum skb_drop_reason` (BTF); `unknown` on kernels
    /// before 5.17, whose tracepoint has no reason.
    pub reason: String,
    /// The reason's number in that enum (absent with `unknown`).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub reason_code: Option<u32>,
    /// The kernel function that freed the packet, `symbol+0xoff`
    /// (from /proc/kallsyms), or the address in hex if it cannot be named.
    pub location: String,
    /// How the pod was found: `socket` (the socket's cgroup), `netns` (the
    /// pod's network namespace), `address` (a pod's IP in the packet) or
    /// `none` (not a pod's, or not known).
    pub attributed_by: String,
    /// Inode of the network namespace the packet was dropped in.
    pub netns: u32,
    /// The device the packet was on (`eth0`, `lo`, the bridge), if any.
    #[serde(skip_serializing_if = "String::is_empty", default)]
    pub ifname: String,
    /// Its index in that netns (0: none).
    pub ifindex: u32,
    /// `tcp`, `udp`, `icmp`, `icmpv6`, another IP protocol number, or empty
    /// when the packet had no readable IP header.
    pub protocol: String,
    /// `ipv4`, `ipv6`, or empty.
    pub family: String,
    /// Source address (empty without an IP header).
    pub saddr: String,
    /// Destination address.
    pub daddr: String,
    /// Source port (TCP and UDP; 0 otherwise).
    pub sport: u16,
    /// Destination port.
    pub dport: u16,
    /// TCP flags (`SYN`, `SYN|ACK`, `RST|ACK`), TCP only.
    #[serde(skip_serializing_if = "String::is_empty", default)]
    pub tcp_flags: String,
    /// Packet length (skb->len) in bytes.
    pub len: u32,
    /// The ethertype (`0x0800` IPv4, `0x86dd` IPv6, ...).
    pub ethertype: u16,
}

/// One tracepoint record, its fields decoded from the event's tracefs `format`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TracepointEvent {
    /// Always `record`.
    #[serde(default)]
    pub kind: String,
    /// `SUBSYSTEM:EVENT`, as perf and bpftrace name it (`sched:sched_process_fork`).
    pub tracepoint: String,
    /// The event's own fields (not the `common_*` ones: pid and comm are the
    /// event's), in the format file's order, named as there.
    pub fields: TpFields,
    /// The record was longer than podscope copies: strings at its end are cut.
    #[serde(skip_serializing_if = "is_false", default)]
    pub truncated: bool,
}

/// A tracepoint field's value: integers as numbers, strings (`char[]`,
/// `__data_loc char[]`) as strings, pointers as hex strings (`0xffff...`),
/// other arrays as lists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TpValue {
    /// A signed integer field.
    Int(i64),
    /// An unsigned integer field.
    Uint(u64),
    /// A string, or a pointer as hex.
    Str(String),
    /// An array that is not a string.
    List(Vec<TpValue>),
}

impl std::fmt::Display for TpValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TpValue::Int(v) => write!(f, "{v}"),
            TpValue::Uint(v) => write!(f, "{v}"),
            TpValue::Str(s) => f.write_str(s),
            TpValue::List(l) => {
                f.write_str("[")?;
                for (i, v) in l.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    write!(f, "{v}")?;
                }
                f.write_str("]")
            }
        }
    }
}

/// Named values in order; a JSON object.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TpFields(pub Vec<(String, TpValue)>);

impl TpFields {
    /// The value of a field by name.
    pub fn get(&self, name: &str) -> Option<&TpValue> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }
}

impl Serialize for TpFields {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

impl<'de> Deserialize<'de> for TpFields {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = TpFields;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object of tracepoint fields")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut a: A,
            ) -> Result<TpFields, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = a.next_entry::<String, TpValue>()? {
                    out.push((k, v));
                }
                Ok(TpFields(out))
            }
        }
        d.deserialize_map(V)
    }
}

fn str_is_empty(s: &str) -> bool {
    s.is_empty()
}

fn is_zero_u32(n: &u32) -> bool {
    *n == 0
}

fn is_zero_u16(n: &u16) -> bool {
    *n == 0
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// A process exec, successful or failed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecEvent {
    /// Always `exec`.
    #[serde(default = "kind_exec")]
    pub kind: String,
    /// Parent process id.
    pub ppid: u32,
    /// The path passed to execve.
    pub filename: String,
    /// argv, including argv[0].
    pub args: Vec<String>,
    /// argv was longer than podscope copies; the last element may be cut.
    #[serde(skip_serializing_if = "is_false", default)]
    pub args_truncated: bool,
    /// 0 on success, else -errno.
    pub retval: i32,
    /// Symbolic errno of a failed exec (`ENOENT`).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub error: Option<String>,
}

fn kind_exec() -> String {
    "exec".into()
}

/// A process exit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExitEvent {
    /// Always `exit`.
    #[serde(default)]
    pub kind: String,
    /// Parent process id.
    pub ppid: u32,
    /// Exit status when the process exited normally.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub exit_code: Option<i32>,
    /// Signal number when a signal killed it.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub signal: Option<i32>,
    /// The signal produced a core dump.
    #[serde(skip_serializing_if = "is_false", default)]
    pub core_dumped: bool,
    /// Time from process start to exit.
    pub lifetime_ns: u64,
}

/// What happened to a TCP connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TcpKind {
    /// An active open was established.
    Connect,
    /// accept() returned a connection.
    Accept,
    /// A connection seen opening was closed.
    Close,
    /// An active open failed (refused, timed out, reset).
    ConnectFailed,
    /// A segment was retransmitted.
    Retransmit,
    /// A reset was sent.
    ResetSent,
    /// A reset was received.
    ResetReceived,
}

impl TcpKind {
    /// snake_case name as in JSON.
    pub fn name(self) -> &'static str {
        match self {
            TcpKind::Connect => "connect",
            TcpKind::Accept => "accept",
            TcpKind::Close => "close",
            TcpKind::ConnectFailed => "connect_failed",
            TcpKind::Retransmit => "retransmit",
            TcpKind::ResetSent => "reset_sent",
            TcpKind::ResetReceived => "reset_received",
        }
    }
}

/// A TCP connection event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TcpEvent {
    /// What happened.
    pub kind: TcpKind,
    /// `client` (we connected), `server` (we accepted) or `unknown`.
    pub role: String,
    /// `ipv4` or `ipv6`.
    pub family: String,
    /// Local address.
    pub saddr: String,
    /// Remote address.
    pub daddr: String,
    /// Local port.
    pub sport: u16,
    /// Remote port.
    pub dport: u16,
    /// A client's connection that NAT sent elsewhere (a Service's
    /// ClusterIP): the address it dialed; `daddr`/`dport` are then the
    /// server that answered, from the node's conntrack. Empty otherwise.
    /// (A boxed str: it is rare, and the event stays small.)
    #[serde(skip_serializing_if = "str_is_empty", default)]
    pub dialed_addr: Box<str>,
    /// The port dialed (see `dialed_addr`); 0 when nothing was rewritten.
    #[serde(skip_serializing_if = "is_zero_u16", default)]
    pub dialed_port: u16,
    /// TCP state name when it happened (`ESTABLISHED`, ...).
    pub state: String,
    /// close/connect_failed: lifetime since connect or accept.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub duration_ns: Option<u64>,
    /// close: payload bytes the owner sent over the connection.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub tx_bytes: Option<u64>,
    /// close: payload bytes the owner received.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub rx_bytes: Option<u64>,
    /// close: segments retransmitted over the connection's life.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub retransmits: Option<u32>,
    /// connect_failed/close: the socket error (`ECONNREFUSED`).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub error: Option<String>,
}

/// A completed block I/O request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BioEvent {
    /// Always `io`.
    #[serde(default)]
    pub kind: String,
    /// Disk name (`vda`).
    pub disk: String,
    /// `major:minor` of the disk.
    pub dev: String,
    /// `read`, `write`, `flush`, `discard`, ...
    pub op: String,
    /// Starting sector (512 bytes).
    pub sector: u64,
    /// Bytes transferred.
    pub bytes: u32,
    /// From issue to the driver until completion.
    pub latency_ns: u64,
    /// From submission until issue to the driver.
    pub queued_ns: u64,
    /// The request carried REQ_SYNC.
    #[serde(skip_serializing_if = "is_false", default)]
    pub sync: bool,
    /// Block-layer status when the I/O failed.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub error: Option<i32>,
}

/// Page-cache activity of one process over one interval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CacheEvent {
    /// Always `interval`.
    #[serde(default)]
    pub kind: String,
    /// Parent process id.
    pub ppid: u32,
    /// Page lookups served from the cache.
    pub hits: u64,
    /// Page lookups that had to read (pages inserted minus pages dirtied by writes).
    pub misses: u64,
    /// Pages dirtied.
    pub dirtied: u64,
    /// Pages inserted into the page cache (reads, readahead and writes).
    pub added: u64,
    /// hits / (hits + misses), 0..1; absent with no lookups.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub hit_ratio: Option<f64>,
    /// Length of the interval the counts cover.
    pub interval_ns: u64,
    /// How lookups were counted: `fentry` (folio_mark_accessed, exact) or
    /// `tracepoints` (filemap lookups, an approximation).
    #[serde(default)]
    pub method: String,
}

/// A file open.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpenEvent {
    /// Always `open`.
    #[serde(default)]
    pub kind: String,
    /// Path as passed (relative paths are relative to `dirfd`, or to the
    /// working directory when `dirfd` is absent).
    pub path: String,
    /// The directory fd of openat/openat2, when it was not AT_FDCWD.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub dirfd: Option<i32>,
    /// O_* flags as passed.
    pub flags: i32,
    /// Symbolic flags (`O_RDONLY|O_CLOEXEC`).
    pub flags_str: String,
    /// Mode for O_CREAT.
    pub mode: u32,
    /// The returned fd on success.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub fd: Option<i32>,
    /// errno on failure.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub errno: Option<i32>,
    /// Symbolic errno on failure (`ENOENT`).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub error: Option<String>,
}

/// One completed system call (or one that never returns: exit, exit_group).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SyscallEvent {
    /// Always `call`.
    #[serde(default)]
    pub kind: String,
    /// Syscall name (`openat`), or `syscall_<nr>` for a number this build does not know.
    pub syscall: String,
    /// Syscall number on this architecture.
    pub nr: u32,
    /// The six raw argument registers, hex (`0xffffff9c`).
    pub args: Vec<String>,
    /// The arguments decoded, strace-like (`AT_FDCWD, "/etc/passwd", O_RDONLY|O_CLOEXEC`);
    /// absent for syscalls podscope does not decode.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub decoded: Option<String>,
    /// The return value (absent for calls that do not return).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub ret: Option<i64>,
    /// errno on failure.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub errno: Option<i32>,
    /// Symbolic errno on failure (`ENOENT`).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub error: Option<String>,
    /// From entry to exit.
    pub duration_ns: u64,
}

/// One syscall's totals in one cgroup, since tracing started (summary mode).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SyscallSummaryEvent {
    /// Always `totals`.
    #[serde(default)]
    pub kind: String,
    /// Syscall name.
    pub syscall: String,
    /// Syscall number on this architecture.
    pub nr: u32,
    /// Completed calls.
    pub calls: u64,
    /// Calls that returned -errno.
    pub errors: u64,
    /// Time spent in the calls, entry to exit.
    pub total_ns: u64,
    /// total_ns / calls.
    pub avg_ns: u64,
    /// 99th percentile from the log2 histogram (the upper bound of its bucket).
    pub p99_ns: u64,
    /// The log2 histogram: `hist[i]` calls took [2^i, 2^(i+1)) ns (trailing zeros cut).
    pub hist: Vec<u64>,
    /// Since tracing started.
    pub elapsed_ns: u64,
}

/// What a raw socket-data record is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SockDataKind {
    /// A read or write that moved bytes.
    Data,
    /// close() of a socket that carried HTTP.
    Close,
}

impl SockDataKind {
    /// snake_case name as in JSON.
    pub fn name(self) -> &'static str {
        match self {
            SockDataKind::Data => "data",
            SockDataKind::Close => "close",
        }
    }
}

/// One socket read or write as the kernel saw it: the connection, the
/// direction, how many bytes moved and the first of them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SockDataEvent {
    /// `data` or `close`.
    pub kind: SockDataKind,
    /// What the probe that captured it parses: `http`, `http2`, `dns` (UDP
    /// messages) or `dns-tcp` (reads and writes of a DNS-over-TCP stream).
    pub protocol: Cow<'static, str>,
    /// TLS plaintext (the tls probe, from inside the TLS library), not
    /// bytes on the socket.
    #[serde(skip_serializing_if = "is_false", default)]
    pub tls: bool,
    /// The kernel socket's address: identifies the connection while it lives.
    pub sock: u64,
    /// The file descriptor in the task.
    pub fd: i32,
    /// `tx` (the task sent) or `rx` (it received); empty for close.
    pub direction: Cow<'static, str>,
    /// The syscall (`read`, `writev`, `sendfile`, ...).
    pub syscall: Cow<'static, str>,
    /// Bytes the call moved.
    pub len: u32,
    /// Bytes this direction carried before this message (a jump means lost messages).
    pub seq: u64,
    /// `ipv4` or `ipv6`.
    pub family: Cow<'static, str>,
    /// Local address.
    pub saddr: String,
    /// Remote address.
    pub daddr: String,
    /// Local port.
    pub sport: u16,
    /// Remote port.
    pub dport: u16,
    /// The first bytes of the message (at most the capture size). Never
    /// serialized: it may hold credentials and bodies.
    #[serde(skip)]
    pub payload: Vec<u8>,
}

/// One HTTP request and its response, seen from one side of the connection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HttpEvent {
    /// `request`, or `parse_error` where bytes on an HTTP connection were
    /// not HTTP/1.x (then `error` says why and the request fields are empty).
    #[serde(default)]
    pub kind: String,
    /// `server` (the task answered it) or `client` (the task sent it).
    pub role: String,
    /// `HTTP/1.1` or `HTTP/1.0` (from the request line), or `HTTP/2`.
    pub version: String,
    /// Request method (`GET`).
    pub method: String,
    /// Path with query values replaced by `?` (`/search?q=?`).
    pub path: String,
    /// The Host header, if sent.
    #[serde(skip_serializing_if = "String::is_empty", default)]
    pub host: String,
    /// Response status; absent when no response came (see `error`).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub status: Option<u16>,
    /// From the first byte of the request to the last of the response.
    pub duration_ns: u64,
    /// Request bytes on the wire (head and body).
    pub request_bytes: u64,
    /// Response bytes on the wire (head and body, interim 1xx included).
    pub response_bytes: u64,
    /// The exchange was inside TLS (seen in the TLS library's plaintext).
    #[serde(skip_serializing_if = "is_false", default)]
    pub tls: bool,
    /// Part of the request or response head was not captured (longer than
    /// the capture size, or messages lost): some fields may be missing.
    #[serde(skip_serializing_if = "is_false", default)]
    pub truncated: bool,
    /// `ipv4` or `ipv6`.
    pub family: String,
    /// Local address.
    pub saddr: String,
    /// Local port.
    pub sport: u16,
    /// Peer address.
    pub daddr: String,
    /// Peer port.
    pub dport: u16,
    /// The address the client dialed when NAT sent the connection to
    /// another (a Service's ClusterIP, a NodePort, a published port): then
    /// `daddr`/`dport` are the server that answered, from the node's
    /// connection tracking. Empty when nothing was rewritten.
    #[serde(skip_serializing_if = "String::is_empty", default)]
    pub dialed_addr: String,
    /// The port dialed (see `dialed_addr`); 0 when nothing was rewritten.
    #[serde(skip_serializing_if = "is_zero_u16", default)]
    pub dialed_port: u16,
    /// HTTP/2: the stream's id, the same at both ends of the connection
    /// (the hop join's key); absent for HTTP/1.x.
    #[serde(skip_serializing_if = "is_zero_u32", default)]
    pub stream_id: u32,
    /// The peer's pod namespace, when the peer address is a known pod's.
    #[serde(skip_serializing_if = "String::is_empty", default)]
    pub peer_namespace: String,
    /// The peer's pod name, when the peer address is a known pod's.
    #[serde(skip_serializing_if = "String::is_empty", default)]
    pub peer_pod: String,
    /// Why the exchange is incomplete (`no response before close`, ...).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub error: Option<String>,
    /// The call's RPC details when it was one (gRPC over HTTP/2).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub rpc: Option<RpcInfo>,
    /// The trace context the request carried (W3C `traceparent`/`tracestate`
    /// or B3), when it carried a valid one. No other header value is kept.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub trace_context: Option<Box<TraceContext>>,
    /// Headers and body bytes kept (`--capture-headers`, `--capture-body`);
    /// boxed, as most requests have none.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub capture: Option<Box<HttpCapture>>,
}

/// What a request event kept of headers and bodies, when asked.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpCapture {
    /// With `--capture-headers`: the request's headers as `[name, value]`
    /// pairs in order (lowercase names; the values of credential headers
    /// and of `--redact-header` names are `[redacted]`).
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub request_headers: Vec<(String, String)>,
    /// With `--capture-headers`: the response's headers (HTTP/2: and trailers).
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub response_headers: Vec<(String, String)>,
    /// With `--capture-body N`: the request body's first N bytes as text
    /// (non-UTF-8 bytes escaped `\xNN`), secret values `[redacted]`;
    /// shorter when the kernel did not capture the rest (HTTP/1 only).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub request_body: Option<String>,
    /// With `--capture-body N`: the response body's first N bytes, as above.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub response_body: Option<String>,
}

/// Trace context picked up from a request's headers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceContext {
    /// Where it came from: `w3c` (`traceparent`), `b3` (the single `b3`
    /// header) or `b3multi` (`X-B3-TraceId`, `X-B3-SpanId`, ...).
    pub format: String,
    /// 32 lowercase hex digits (a 64-bit B3 id is left-padded with zeros).
    pub trace_id: String,
    /// The caller's span id: 16 lowercase hex digits.
    pub span_id: String,
    /// B3's parent span id, when sent.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub parent_span_id: Option<String>,
    /// The sampling decision, when sent (W3C: the sampled flag; B3: `1`/`d` or `0`).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub sampled: Option<bool>,
    /// The W3C `tracestate` sent with a valid `traceparent` (at most 512 bytes).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub tracestate: Option<String>,
}

/// An RPC carried by an HTTP request (OpenTelemetry `rpc.*` attributes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RpcInfo {
    /// `grpc`.
    pub system: String,
    /// Fully qualified service (`helloworld.Greeter`), from `:path`.
    pub service: String,
    /// Method (`SayHello`), from `:path`.
    pub method: String,
    /// `grpc-status` from the trailers (or a trailers-only response);
    /// absent when the call did not finish or the trailers were not decoded.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub status: Option<u32>,
    /// `grpc-message`, percent-decoded, cut at 256 bytes.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub message: Option<String>,
}

/// The gRPC status code names (grpc/doc/statuscodes.md).
pub fn grpc_code_name(code: u32) -> &'static str {
    match code {
        0 => "OK",
        1 => "CANCELLED",
        2 => "UNKNOWN",
        3 => "INVALID_ARGUMENT",
        4 => "DEADLINE_EXCEEDED",
        5 => "NOT_FOUND",
        6 => "ALREADY_EXISTS",
        7 => "PERMISSION_DENIED",
        8 => "RESOURCE_EXHAUSTED",
        9 => "FAILED_PRECONDITION",
        10 => "ABORTED",
        11 => "OUT_OF_RANGE",
        12 => "UNIMPLEMENTED",
        13 => "INTERNAL",
        14 => "UNAVAILABLE",
        15 => "DATA_LOSS",
        16 => "UNAUTHENTICATED",
        _ => "UNKNOWN_CODE",
    }
}

/// One DNS query and its response, seen from one end.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DnsEvent {
    /// Always `query`.
    #[serde(default)]
    pub kind: String,
    /// `client` (the task asked) or `server` (it answered).
    pub role: String,
    /// The message id.
    pub id: u16,
    /// The question's name (`example.com`).
    pub name: String,
    /// The question's type (`A`, `AAAA`, `TYPE65`).
    pub qtype: String,
    /// Response code (`NOERROR`, `NXDOMAIN`); absent without a response.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub rcode: Option<String>,
    /// `udp`, `tcp`, or `tls` (DNS over TLS, port 853, from the tls probe).
    #[serde(default)]
    pub transport: String,
    /// Answer records: addresses for A/AAAA, names for CNAME/PTR, else the type.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub answers: Vec<String>,
    /// From the query to the response; absent without both.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub latency_ns: Option<u64>,
    /// `ipv4` or `ipv6`.
    pub family: String,
    /// Local address.
    pub saddr: String,
    /// Local port.
    pub sport: u16,
    /// Peer address (the name server for a client; empty for an unconnected server socket).
    pub daddr: String,
    /// Peer port.
    pub dport: u16,
    /// The address the client dialed when NAT sent the connection to
    /// another (a Service's ClusterIP, a NodePort, a published port): then
    /// `daddr`/`dport` are the server that answered, from the node's
    /// connection tracking. Empty when nothing was rewritten.
    #[serde(skip_serializing_if = "String::is_empty", default)]
    pub dialed_addr: String,
    /// The port dialed (see `dialed_addr`); 0 when nothing was rewritten.
    #[serde(skip_serializing_if = "is_zero_u16", default)]
    pub dialed_port: u16,
    /// The peer's pod namespace, when the peer address is a known pod's.
    #[serde(skip_serializing_if = "String::is_empty", default)]
    pub peer_namespace: String,
    /// The peer's pod name, when the peer address is a known pod's.
    #[serde(skip_serializing_if = "String::is_empty", default)]
    pub peer_pod: String,
    /// Why the exchange is incomplete (`no response`, `response to a query not seen`).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub error: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Events are moved between the pipeline's vectors several times each:
    /// the largest probe parts (HTTP, DNS, drop, net packet) are boxed so
    /// that every event does not pay for them (672 bytes before).
    #[test]
    fn an_event_stays_small() {
        let size = std::mem::size_of::<Event>();
        eprintln!("Event: {size} bytes");
        assert!(size <= 448, "Event grew to {size} bytes");
    }

    #[test]
    fn tracepoint_fields_are_an_object_in_order_and_round_trip() {
        let ev = Event {
            timestamp: Timestamp(1_700_000_000_123_456_789),
            identity: Identity::default(),
            pid: 5,
            tid: 5,
            uid: 0,
            comm: "curl".into(),
            cgroup_id: 1,
            data: EventData::Tracepoint(TracepointEvent {
                kind: "record".into(),
                tracepoint: "net:net_dev_xmit".into(),
                fields: TpFields(vec![
                    ("skbaddr".into(), TpValue::Str("0xffff8880".into())),
                    ("len".into(), TpValue::Uint(74)),
                    ("rc".into(), TpValue::Int(-1)),
                    (
                        "mac".into(),
                        TpValue::List(vec![TpValue::Uint(2), TpValue::Uint(0)]),
                    ),
                ]),
                truncated: false,
            }),
        };
        let json = serde_json::to_string(&ev).unwrap();
        assert!(
            json.contains(r#""probe":"tracepoint","kind":"record","tracepoint":"net:net_dev_xmit","fields":{"skbaddr":"0xffff8880","len":74,"rc":-1,"mac":[2,0]}"#),
            "{json}"
        );
        assert!(!json.contains("truncated"));
        let back: Event = serde_json::from_str(&json).unwrap();
        assert_eq!(back.probe(), ProbeKind::Tracepoint);
        assert_eq!(back.kind(), "record");
        let EventData::Tracepoint(t) = &back.data else {
            panic!("{back:?}")
        };
        assert_eq!(t.fields.get("rc"), Some(&TpValue::Int(-1)));
        // A non-negative number comes back as Int (untagged, first match):
        // equal as JSON, which is what consumers see.
        assert_eq!(serde_json::to_string(&back).unwrap(), json);
    }

    fn tcp_close() -> Event {
        Event {
            timestamp: Timestamp(1_700_000_000_123_456_789),
            identity: Identity::default(),
            pid: 42,
            tid: 43,
            uid: 0,
            comm: "curl".into(),
            cgroup_id: 7,
            data: EventData::Tcp(TcpEvent {
                dialed_addr: Box::default(),
                dialed_port: 0,
                kind: TcpKind::Close,
                role: "client".into(),
                family: "ipv4".into(),
                saddr: "127.0.0.1".into(),
                daddr: "127.0.0.1".into(),
                sport: 40000,
                dport: 80,
                state: "FIN_WAIT1".into(),
                duration_ns: Some(1000),
                tx_bytes: Some(10),
                rx_bytes: Some(20),
                retransmits: Some(0),
                error: None,
            }),
        }
    }

    #[test]
    fn json_has_the_documented_flat_fields() {
        let v = serde_json::to_value(tcp_close()).unwrap();
        assert_eq!(v["probe"], "tcp");
        assert_eq!(v["kind"], "close");
        assert_eq!(v["timestamp"], "2023-11-14T22:13:20.123456789Z");
        assert_eq!(v["pid"], 42);
        assert_eq!(v["comm"], "curl");
        assert_eq!(v["cgroup_id"], 7);
        assert_eq!(v["tx_bytes"], 10);
        assert_eq!(v["rx_bytes"], 20);
        assert_eq!(v["duration_ns"], 1000);
        assert!(v.get("pod").is_none(), "empty identity fields are omitted");
    }

    #[test]
    fn json_round_trips() {
        let e = tcp_close();
        let s = serde_json::to_string(&e).unwrap();
        let back: Event = serde_json::from_str(&s).unwrap();
        assert_eq!(back, e);
    }
}
