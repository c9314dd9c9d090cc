//! Bearer tokens: loading them and comparing them.

use std::path::Path;

use anyhow::{bail, Context, Result};

/// The environment variable that holds the token when no `--token-file` is given.
pub const TOKEN_ENV: &str = "PODSCOPE_TOKEN";

/// The token from `--token-file` (surrounding whitespace trimmed, as a
/// Kubernetes Secret mounted as a file usually ends in a newline) or from
/// `PODSCOPE_TOKEN`.
pub fn load_token(file: Option<&Path>) -> Result<String> {
    let token = match file {
        Some(f) => std::fs::read_to_string(f)
            .with_context(|| format!("reading the token file {}", f.display()))?
            .trim()
            .to_string(),
        None => std::env::var(TOKEN_ENV)
            .unwrap_or_default()
            .trim()
            .to_string(),
    };
    if token.is_empty() {
        bail!(
            "no bearer token: give --token-file PATH (a file holding the token) or set {TOKEN_ENV}"
        );
    }
    Ok(token)
}

/// A second header the hub accepts the token in, with the same `Bearer TOKEN`
/// value. The Kubernetes API server removes `Authorization` after it has
/// authenticated a request, so through its service proxy (`kubectl
/// podscope`) the hub's token travels in this header instead.
pub const PROXY_HEADER: &str = "x-podscope-authorization";

/// Whether an `Authorization` header value carries this token. The
/// comparison does not stop at the first difference, so its time does not
/// tell how much of a guess was right.
pub fn bearer_ok(header: Option<&str>, token: &str) -> bool {
    let Some(given) = header.and_then(|h| h.strip_prefix("Bearer ")) else {
        return false;
    };
    let (a, b) = (given.trim().as_bytes(), token.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Adds `authorization: Bearer TOKEN` to every gRPC call (the agent's link,
/// the CLI's gRPC transport, tests).
#[derive(Clone)]
pub struct Bearer(tonic::metadata::MetadataValue<tonic::metadata::Ascii>);

impl std::fmt::Debug for Bearer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Bearer(..)")
    }
}

impl Bearer {
    /// Fails only for a token that cannot be a header value.
    pub fn new(token: &str) -> Result<Bearer> {
        format!("Bearer {token}")
            .parse()
            .map(Bearer)
            .map_err(|_| anyhow::anyhow!("the token is not a valid header value"))
    }
}

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        req.metadata_mut().insert("authorization", self.0.clone());
        Ok(req)
    }
}

/// Refuses gRPC calls that do not carry this bearer token (UNAUTHENTICATED):
/// the hub's HubApi and the agent's API.
#[derive(Clone)]
pub struct RequireBearer(pub std::sync::Arc<str>);

impl std::fmt::Debug for RequireBearer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RequireBearer(..)")
    }
}

impl tonic::service::Interceptor for RequireBearer {
    fn call(&mut self, req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        let given = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        if bearer_ok(given, &self.0) {
            Ok(req)
        } else {
            Err(tonic::Status::unauthenticated(
                "missing or wrong bearer token: send 'authorization: Bearer TOKEN' metadata",
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer() {
        assert!(bearer_ok(Some("Bearer s3cret"), "s3cret"));
        assert!(!bearer_ok(Some("Bearer s3cre"), "s3cret"));
        assert!(!bearer_ok(Some("Basic s3cret"), "s3cret"));
        assert!(!bearer_ok(None, "s3cret"));
    }
}
