//! podscope's in-process pipeline, shared by the CLI and the agent:
//! kernel source (podscope-bpf's [`Tracer`](podscope_bpf::Tracer)) -> enrich
//! (pod identity, [`enrich`]) -> select ([`select`]) -> sinks ([`format`]).
//! No consumer re-parses another's text output.

pub mod cgroup;
pub mod dnat;
pub mod enrich;
pub mod format;
pub mod ftrace;
pub mod node;
pub mod podtable;
pub mod probes;
pub mod select;
pub mod sinks;
pub mod store;
pub mod thread;

pub use enrich::{KernelFilter, PodIndex, Verdict};
pub use format::{Columns, JsonLines, Sink};
pub use node::{parse_ring_size, Ended, Hooks, Node, NodeConfig, SessionId, SessionSpec, Started};
pub use select::{PodFlags, PodSelection};
pub use store::PodStore;
pub use thread::NodeHandle;
