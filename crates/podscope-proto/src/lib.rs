//! Application protocols seen in raw socket data: a pipeline stage that turns
//! the http and dns probes' socket reads and writes into one event per
//! request (HTTP/1.x, HTTP/2 and gRPC) or query (DNS).
//!
//! Raw records ([`podscope_model::EventData::SockData`]) go in; request events
//! ([`podscope_model::EventData::Http`]) come out; every other event passes
//! through untouched and in order. Nothing here keeps bodies or credential
//! headers: the HTTP/1 parser reads only the request line, the status line
//! and the framing headers (plus `Host`, and the ids of the trace-context
//! headers: `traceparent`, `tracestate`, `b3`, `X-B3-*`); the HTTP/2 one keeps the
//! pseudo-headers, content-type and gRPC status fields of each decoded
//! block, and its HPACK tables never hold credential values.

pub mod capture;
pub mod dns;
pub mod h2;
pub mod hpack;
mod http1;
mod redact;
mod stage;
pub mod tracectx;

pub use capture::Capture;
pub use http1::{Connection, Exchange, Outcome, Side};
pub use redact::redact_query;
pub use stage::{H2Failures, Stage, Stats};
