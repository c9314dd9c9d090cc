//! What can go wrong while exporting metrics.

use std::net::SocketAddr;

/// An exporter error; each names what was being done and where.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The metrics address could not be bound.
    #[error("cannot listen for metrics on {addr}: {source} (is another process using the port? pick another --metrics-listen address, e.g. 127.0.0.1:9464)")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// A background thread could not be started.
    #[error("cannot start the {what} thread: {source}")]
    Thread {
        /// Which thread.
        what: &'static str,
        /// Why.
        source: std::io::Error,
    },
    /// Encoding the registry failed (a bug: the text encoder writes to a String).
    #[error("encoding metrics failed")]
    Encode(#[from] std::fmt::Error),
}
