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
