//! The one error type of this crate: each variant names what was wrong and where.

use std::fmt;
use std::path::PathBuf;

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One CRI socket that was tried during endpoint discovery, and why it was not used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tried {
    /// The socket path.
    pub path: PathBuf,
    /// Why it was not used ("does not exist", the connect or RPC error, ...).
    pub reason: String,
}

impl fmt::Display for Tried {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.path.display(), self.reason)
    }
}

fn list_tried(tried: &[Tried]) -> String {
    tried
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Errors of container and pod discovery.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No CRI socket answered among the well-known paths.
    #[error(
        "no CRI runtime socket answered; tried: {}. Pass the runtime's endpoint explicitly (unix:///path/to.sock)",
        list_tried(.tried)
    )]
    NoRuntime {
        /// Every path that was tried, in order, with the reason it failed.
        tried: Vec<Tried>,
    },

    /// An endpoint string that is not a unix socket address.
    #[error("invalid CRI endpoint {endpoint:?}: {reason}; expected unix:///path/to.sock or /path/to.sock")]
    BadEndpoint {
        /// The endpoint as given.
        endpoint: String,
        /// What is wrong with it.
        reason: String,
    },

    /// The socket could not be connected to.
    #[error("cannot connect to CRI socket {path}: {reason}")]
    Connect {
        /// The socket path.
        path: PathBuf,
        /// The transport error, rendered with its causes.
        reason: String,
    },

    /// A CRI call returned an error status.
    #[error("CRI call {call} on {path} failed: {code:?}: {message}")]
    Rpc {
        /// The RPC name, e.g. `ListPodSandbox`.
        call: &'static str,
        /// The socket path.
        path: PathBuf,
        /// The gRPC status code.
        code: tonic::Code,
        /// The status message.
        message: String,
    },

    /// The runtime answered something this crate cannot use.
    #[error("unexpected CRI answer to {call} from {path}: {reason}")]
    BadResponse {
        /// The RPC name.
        call: &'static str,
        /// The socket path.
        path: PathBuf,
        /// What was wrong with the answer.
        reason: String,
    },

    /// A Docker Engine API socket (Docker or podman) could not be used.
    #[error("cannot list {runtime} containers from {path}: {reason}")]
    Engine {
        /// The engine expected there: `docker` or `podman`.
        runtime: &'static str,
        /// The socket path.
        path: PathBuf,
        /// What went wrong and what to do about it.
        reason: String,
    },

    /// A file under /proc or /sys could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },

    /// No cgroup2 file system is mounted.
    #[error("no cgroup2 mount found in /proc/self/mountinfo (expected /sys/fs/cgroup or /sys/fs/cgroup/unified)")]
    NoCgroup2,

    /// A process is not in any cgroup v2 (no `0::` line in /proc/PID/cgroup).
    #[error("process {pid} has no cgroup v2 entry (no \"0::\" line in /proc/{pid}/cgroup)")]
    NoCgroup2Entry {
        /// The process id.
        pid: u32,
    },

    /// The tokio runtime for the blocking API could not be built.
    #[error("cannot start the async runtime for CRI calls: {0}")]
    AsyncRuntime(#[source] std::io::Error),

    /// A pod or container spec (test bed) is invalid.
    #[error("invalid spec: {0}")]
    Spec(String),

    /// A label selector did not parse.
    #[error(transparent)]
    Selector(#[from] crate::selector::SelectorError),
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}
