//! CRI endpoints: parse `unix:///path` addresses and list the well-known sockets.

use std::path::PathBuf;

use crate::error::{Error, Result};

/// Well-known CRI sockets, tried in this order when no endpoint is given.
pub const WELL_KNOWN_SOCKETS: &[&str] = &[
    "/run/containerd/containerd.sock",
    "/run/k3s/containerd/containerd.sock",
    "/var/run/crio/crio.sock",
    "/run/cri-dockerd.sock",
    "/run/podscope-testbed/containerd.sock",
];

/// Parses an endpoint: `unix:///path/to.sock`, `unix:/path`, or a bare absolute path.
pub fn parse_endpoint(endpoint: &str) -> Result<PathBuf> {
    let bad = |reason: &str| Error::BadEndpoint {
        endpoint: endpoint.to_owned(),
        reason: reason.to_owned(),
    };
    let trimmed = endpoint.trim();
    let path = if let Some(rest) = trimmed.strip_prefix("unix://") {
        rest
    } else if let Some(rest) = trimmed.strip_prefix("unix:") {
        rest
    } else if trimmed.contains("://") {
        return Err(bad("only unix sockets are supported"));
    } else {
        trimmed
    };
    if path.is_empty() {
        return Err(bad("the socket path is empty"));
    }
    if !path.starts_with('/') {
        return Err(bad("the socket path must be absolute"));
    }
    Ok(PathBuf::from(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_forms() {
        for (s, want) in [
            (
                "unix:///run/containerd/containerd.sock",
                "/run/containerd/containerd.sock",
            ),
            ("unix:/run/x.sock", "/run/x.sock"),
            ("/var/run/crio/crio.sock", "/var/run/crio/crio.sock"),
            ("  /a.sock ", "/a.sock"),
        ] {
            assert_eq!(parse_endpoint(s).unwrap(), PathBuf::from(want), "{s}");
        }
    }

    #[test]
    fn rejects_bad_ones_with_the_reason() {
        for (s, why) in [
            ("tcp://127.0.0.1:1234", "only unix sockets"),
            ("unix://", "empty"),
            ("", "empty"),
            ("relative.sock", "absolute"),
            ("unix://run/x.sock", "absolute"),
        ] {
            let err = parse_endpoint(s).unwrap_err().to_string();
            assert!(err.contains(why), "{s}: {err}");
            assert!(err.contains("unix:///path/to.sock"), "{err}");
        }
    }
}
