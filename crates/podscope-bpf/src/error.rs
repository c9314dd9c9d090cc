//! Errors from loading and running probes, worded for the person at the terminal.

use podscope_model::ProbeKind;

/// What went wrong while loading, attaching or reading probes.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The kernel refused to load or attach a probe.
    #[error("probe '{probe}' could not be {stage}: {source}{}", log_suffix(.log))]
    Load {
        /// Which probe (or `cgroup-watcher`).
        probe: &'static str,
        /// `opened`, `loaded` (verifier) or `attached`.
        stage: &'static str,
        /// libbpf's error.
        #[source]
        source: libbpf_rs::Error,
        /// What libbpf said while trying (includes the verifier log).
        log: Vec<String>,
    },
    /// A hook the probe needs does not exist on this kernel.
    #[error("probe '{probe}' is not supported by this kernel: {reason}")]
    Unsupported {
        /// Which probe.
        probe: ProbeKind,
        /// What is missing.
        reason: String,
    },
    /// Not enough privilege to use BPF.
    #[error("{0}")]
    Privilege(String),
    /// An option value that cannot work.
    #[error("{0}")]
    InvalidOption(String),
    /// Reading or updating a map, or polling, failed at run time.
    #[error("{what}: {source}")]
    Runtime {
        /// What podscope was doing.
        what: String,
        /// libbpf's error.
        #[source]
        source: libbpf_rs::Error,
    },
    /// System setup (tracefs, clocks) failed.
    #[error("{what}: {source}")]
    Io {
        /// What podscope was doing.
        what: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

fn log_suffix(log: &[String]) -> String {
    if log.is_empty() {
        return String::new();
    }
    // The verifier log can be thousands of lines; its end says why.
    let tail: Vec<&str> = log
        .iter()
        .rev()
        .take(40)
        .rev()
        .map(String::as_str)
        .collect();
    format!(
        "\nlibbpf/verifier log (last {} lines):\n{}",
        tail.len(),
        tail.join("\n")
    )
}

impl Error {
    pub(crate) fn runtime(what: impl Into<String>) -> impl FnOnce(libbpf_rs::Error) -> Error {
        let what = what.into();
        move |source| Error::Runtime { what, source }
    }
}
