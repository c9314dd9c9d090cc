//! podscope's plain event and identity types: what every stage after the
//! kernel passes around. No BPF, no Kubernetes, so all of it tests without root.

mod errno;
mod event;
mod flow_filter;
pub mod hooks;
mod probe;

pub use errno::errno_name;
pub use event::{
    grpc_code_name, BioEvent, CacheEvent, DnsEvent, DropEvent, Event, EventData, ExecEvent,
    ExitEvent, HttpCapture, HttpEvent, Identity, NetFlowEvent, NetPacketEvent, NetStage, OpenEvent,
    RpcInfo, SockDataEvent, SockDataKind, SyscallEvent, SyscallSummaryEvent, TcpEvent, TcpKind,
    Timestamp, TpFields, TpValue, TraceContext, TracepointEvent,
};
pub use flow_filter::{FlowFilter, FlowFilterError, FLOW_FILTER_MAX_HOSTS, FLOW_FILTER_MAX_PORTS};
pub use probe::{Hook, Implementation, ProbeKind, UnknownProbe};
