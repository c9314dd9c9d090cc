//! Application protocols seen in raw socket data: a pipeline stage that turns
//! the http and dns probes' socket reads and writes into one event per
//! request (HTTP/1.x) or query (DNS).
//!
//! Raw records ([`podscope_model::EventData::SockData`]) go in; request events
//! ([`podscope_model::EventData::Http`]) come out; every other event passes
//! through untouched and in order. Nothing here keeps bodies or credential
//! headers: the parser reads only the request line, the status line and the
//! framing headers (plus `Host`).

pub mod dns;
mod http1;
mod redact;
mod stage;

pub use http1::{Connection, Exchange, Outcome, Side};
pub use redact::redact_query;
pub use stage::{Stage, Stats};
