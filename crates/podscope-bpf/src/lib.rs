//! The kernel side of podscope: loads the BPF probes, owns the in-kernel
//! filter maps and ring buffers, counts losses, and decodes raw records into
//! [`podscope_model::Event`]s. The only podscope crate with `unsafe` code.

mod decode;
mod error;
mod load;
pub mod sys;
mod tracer;

mod bio;
mod cache;
mod cgroup;
mod dns;
mod exec;
mod exit;
mod http;
mod open;
mod tcp;

pub use cgroup::{CgroupChange, FILTER_PENDING};
pub use error::Error;
pub use http::MAX_CAPTURE_BYTES as HTTP_MAX_CAPTURE_BYTES;
pub use sys::{check_privileges, implementation_support, probe_support, ProbeSupport};
pub use tracer::{CgroupWatch, Filter, ProbeFailure, ProbeStats, TraceOptions, Tracer};
