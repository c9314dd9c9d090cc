//! What of a request is kept beyond its line, status and sizes, when asked
//! (`--capture-headers`, `--capture-body N`): header names and values, and
//! the first bytes of each body. Credentials are never kept: the values of
//! credential headers (and of any `--redact-header` name) become
//! [`REDACTED`], and so do, in captured bodies, the values of JSON members
//! and form fields whose names look like secrets, and bearer/basic tokens.
//! Redaction happens here, in the parser, before any event exists.

/// What a redacted value is replaced by.
pub const REDACTED: &str = "[redacted]";

/// Headers whose values are never kept, whatever the flags say.
pub const CREDENTIAL_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
    "x-api-key",
    "x-auth-token",
    "x-csrf-token",
    "x-xsrf-token",
];

/// Parts of a JSON member or form field name that mark its value secret
/// (compared without case; `-` and `_` alike).
const SECRET_NAME_PARTS: &[&str] = &[
    "pass",
    "secret",
    "token",
    "apikey",
    "api_key",
    "auth",
    "credential",
    "cookie",
    "session",
    "private",
    "signature",
];

/// What an exchange kept (each part only when asked for and present): the
/// request event's own type, so it moves into the event as it is.
pub use podscope_model::HttpCapture as Captured;

/// The capture settings of a trace (all off by default).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capture {
    /// Keep request and response headers (`--capture-headers`).
    pub headers: bool,
    /// Keep the first this many bytes of each body (`--capture-body N`; 0: none).
    pub body: usize,
    /// More header names whose values are never kept (`--redact-header`),
    /// lowercase; their names also mark body fields secret.
    pub redact: Vec<String>,
}

/// The most body bytes `--capture-body` keeps (the kernel copies at most
/// this much of one read or write).
pub const MAX_BODY: usize = 16 * 1024;

impl Capture {
    /// Capture settings from what a user gave (the CLI's flags or a hub
    /// session's `capture` object), checked: a body size of 1..=16K, header
    /// names of token characters.
    pub fn new(headers: bool, body: Option<u64>, redact: &[String]) -> Result<Capture, String> {
        let body = match body {
            None => 0,
            Some(b) if b == 0 || b > MAX_BODY as u64 => {
                return Err(format!(
                    "body size {b} must be between 1 and 16K bytes (e.g. 256, 1K, 4K)"
                ))
            }
            Some(b) => b as usize,
        };
        let mut names = Vec::new();
        for n in redact {
            let n = n.trim();
            if n.is_empty()
                || !n
                    .bytes()
                    .all(|c| c.is_ascii_alphanumeric() || b"-_.".contains(&c))
            {
                return Err(format!(
                    "'{n}' is not a header name (letters, digits, '-', '_', '.'; e.g. x-tenant-key)"
                ));
            }
            names.push(n.to_ascii_lowercase());
        }
        Ok(Capture {
            headers,
            body,
            redact: names,
        })
    }

    /// Whether anything beyond the default fields is kept.
    pub fn any(&self) -> bool {
        self.headers || self.body > 0
    }

    /// Whether the value of header `name` must never be kept.
    pub fn secret_header(&self, name: &[u8]) -> bool {
        self.secret_lower(&String::from_utf8_lossy(name).to_ascii_lowercase())
    }

    /// [`Capture::secret_header`] of a name already in lowercase.
    fn secret_lower(&self, n: &str) -> bool {
        CREDENTIAL_HEADERS.contains(&n) || self.redact.iter().any(|r| r == n)
    }

    /// A header as kept: lowercase name, value (or [`REDACTED`]).
    pub fn header(&self, name: &[u8], value: &[u8]) -> (String, String) {
        let n = String::from_utf8_lossy(name).to_ascii_lowercase();
        let v = if self.secret_lower(&n) {
            REDACTED.to_string()
        } else if matches!(n.as_str(), "referer" | "location" | "content-location") {
            // URLs: their query values are redacted as the path's are.
            crate::redact::redact_query(&String::from_utf8_lossy(value))
        } else {
            String::from_utf8_lossy(value).into_owned()
        };
        (n, v)
    }

    fn secret_name(&self, name: &str) -> bool {
        let n = name.to_ascii_lowercase().replace('-', "_");
        SECRET_NAME_PARTS.iter().any(|p| n.contains(p))
            || self
                .redact
                .iter()
                .any(|r| !r.is_empty() && n.contains(&r.replace('-', "_")))
    }

    /// The first bytes of a body as kept: text (bytes that are not UTF-8
    /// escaped as `\xNN`), with secret values redacted.
    pub fn body_text(&self, bytes: &[u8]) -> String {
        use std::borrow::Cow;
        let text: Cow<'_, str> = match std::str::from_utf8(bytes) {
            Ok(t) => Cow::Borrowed(t),
            // A body cut inside a character keeps what is whole.
            Err(e) if e.error_len().is_none() => String::from_utf8_lossy(&bytes[..e.valid_up_to()]),
            Err(_) => Cow::Owned(bytes.escape_ascii().to_string()),
        };
        // Each pass only where what it looks for is there at all (a SIMD
        // search): a body with no quote has no JSON member to redact, one
        // with no '=' no form field (measured: the passes were 15 % of a
        // traced nginx's cost per request with --capture-body 1024).
        let text = if memchr::memchr(b'"', text.as_bytes()).is_some() {
            Cow::Owned(self.redact_json(&text))
        } else {
            text
        };
        let text = if memchr::memchr(b'=', text.as_bytes()).is_some() {
            Cow::Owned(self.redact_form(&text))
        } else {
            text
        };
        redact_tokens(&text)
    }

    /// `"password": "x"` -> `"password": "[redacted]"` (any value: a string,
    /// a number, a literal; objects and arrays are kept, their members
    /// checked on their own).
    fn redact_json(&self, s: &str) -> String {
        let b = s.as_bytes();
        let mut out = String::with_capacity(s.len());
        let mut i = 0;
        let mut copied = 0;
        while i < b.len() {
            if b[i] != b'"' {
                i += 1;
                continue;
            }
            let Some(end) = string_end(b, i + 1) else {
                break;
            };
            let name = &s[i + 1..end];
            let mut j = end + 1;
            while j < b.len() && b[j].is_ascii_whitespace() {
                j += 1;
            }
            if j >= b.len() || b[j] != b':' || !self.secret_name(name) {
                i = end + 1;
                continue;
            }
            j += 1;
            while j < b.len() && b[j].is_ascii_whitespace() {
                j += 1;
            }
            let value_end = if j < b.len() && b[j] == b'"' {
                // A string cut by the capture runs to the end.
                string_end(b, j + 1).map_or(b.len(), |e| e + 1)
            } else if j < b.len() && (b[j] == b'{' || b[j] == b'[') {
                i = j;
                continue;
            } else {
                let mut k = j;
                while k < b.len()
                    && !matches!(b[k], b',' | b'}' | b']')
                    && !b[k].is_ascii_whitespace()
                {
                    k += 1;
                }
                k
            };
            out.push_str(&s[copied..j]);
            out.push('"');
            out.push_str(REDACTED);
            out.push('"');
            copied = value_end;
            i = value_end;
        }
        out.push_str(&s[copied..]);
        out
    }

    /// `user=a&password=b` -> `user=a&password=[redacted]`.
    fn redact_form(&self, s: &str) -> String {
        let b = s.as_bytes();
        let mut out = String::with_capacity(s.len());
        let mut copied = 0;
        let mut start = 0;
        for i in 0..=b.len() {
            let boundary = i == b.len() || matches!(b[i], b'&' | b'\n' | b'\r' | b' ' | b';');
            if !boundary {
                continue;
            }
            if let Some(eq) = s[start..i].find('=') {
                let name = &s[start..start + eq];
                let plain = !name.is_empty()
                    && name.bytes().all(|c| {
                        c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.' | b'[' | b']')
                    });
                if plain && self.secret_name(name) && start + eq + 1 < i {
                    out.push_str(&s[copied..start + eq + 1]);
                    out.push_str(REDACTED);
                    copied = i;
                }
            }
            start = i + 1;
        }
        if copied < s.len() {
            out.push_str(&s[copied..]);
        }
        out
    }
}

/// The index of the `"` that ends a JSON string whose content starts at `from`.
fn string_end(b: &[u8], from: usize) -> Option<usize> {
    let mut k = from;
    while k < b.len() {
        match b[k] {
            b'\\' => k += 2,
            b'"' => return Some(k),
            _ => k += 1,
        }
    }
    None
}

/// `Bearer abc.def` / `Basic dXNlcg==` anywhere -> `Bearer [redacted]`
/// (the words in any case).
fn redact_tokens(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let (mut copied, mut from) = (0, 0);
    while let Some(off) = memchr::memchr2(b'b', b'B', &b[from..]) {
        let i = from + off;
        let word = ["bearer ", "basic "].iter().find(|w| {
            b.len() - i >= w.len() && b[i..i + w.len()].eq_ignore_ascii_case(w.as_bytes())
        });
        let Some(w) = word else {
            from = i + 1;
            continue;
        };
        let start = i + w.len();
        let n = b[start..]
            .iter()
            .take_while(|c| c.is_ascii_alphanumeric() || b"-._~+/=".contains(c))
            .count();
        if n > 0 {
            out.push_str(&s[copied..start]);
            out.push_str(REDACTED);
            copied = start + n;
        }
        from = start + n;
    }
    out.push_str(&s[copied..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cap() -> Capture {
        Capture {
            headers: true,
            body: 256,
            redact: vec!["x-tenant".into()],
        }
    }

    #[test]
    fn credential_and_named_headers_are_redacted() {
        let c = cap();
        assert_eq!(
            c.header(b"Authorization", b"Bearer s3cret"),
            ("authorization".into(), REDACTED.into())
        );
        assert_eq!(c.header(b"Cookie", b"sid=1").1, REDACTED);
        assert_eq!(c.header(b"X-Tenant", b"acme").1, REDACTED);
        assert_eq!(
            c.header(b"User-Agent", b"curl/8"),
            ("user-agent".into(), "curl/8".into())
        );
        assert_eq!(
            c.header(b"Referer", b"http://a/b?token=x").1,
            "http://a/b?token=?"
        );
    }

    /// The token pass as it was first written (lowercasing the rest of the
    /// text at every step): the oracle for the allocation-free one.
    fn redact_tokens_reference(s: &str) -> String {
        let mut out = String::new();
        let mut rest = s;
        loop {
            let lower = rest.to_ascii_lowercase();
            let at = ["bearer ", "basic "]
                .iter()
                .filter_map(|w| lower.find(w).map(|i| (i, w.len())))
                .min();
            let Some((i, wl)) = at else {
                out.push_str(rest);
                return out;
            };
            let after = &rest[i + wl..];
            let n = after
                .bytes()
                .take_while(|c| c.is_ascii_alphanumeric() || b"-._~+/=".contains(c))
                .count();
            out.push_str(&rest[..i + wl]);
            if n > 0 {
                out.push_str(REDACTED);
            }
            rest = &after[n..];
        }
    }

    #[test]
    fn token_redaction_agrees_with_its_reference_on_random_text() {
        let pieces = [
            "bearer ", "Bearer ", "BASIC ", "basic", "b", "B", "e", "a", "=", " ", "x.y", "é",
            "\n", "tok3n", "-", "bas", "bearer",
        ];
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..20_000 {
            let s: String = (0..rng.usize(0..12))
                .map(|_| pieces[rng.usize(..pieces.len())])
                .collect();
            assert_eq!(redact_tokens(&s), redact_tokens_reference(&s), "{s:?}");
        }
    }

    #[test]
    fn secrets_in_bodies_are_redacted() {
        let c = cap();
        assert_eq!(
            c.body_text(br#"{"user":"ann","password":"hunter2","n":1}"#),
            r#"{"user":"ann","password":"[redacted]","n":1}"#
        );
        assert_eq!(
            c.body_text(br#"{"access_token": 12345, "x_tenant": "acme"}"#),
            r#"{"access_token": "[redacted]", "x_tenant": "[redacted]"}"#
        );
        // Escaped quotes inside a secret, and a value cut by the capture.
        assert_eq!(
            c.body_text(br#"{"secret":"a\"b","k":"v"}"#),
            r#"{"secret":"[redacted]","k":"v"}"#
        );
        assert_eq!(
            c.body_text(br#"{"k":"v","client_secret":"abc"#),
            r#"{"k":"v","client_secret":"[redacted]""#
        );
        // Nested objects keep their structure; members are checked.
        assert_eq!(
            c.body_text(br#"{"auth":{"password":"p"}}"#),
            r#"{"auth":{"password":"[redacted]"}}"#
        );
        assert_eq!(
            c.body_text(b"user=ann&password=hunter2&remember=1"),
            "user=ann&password=[redacted]&remember=1"
        );
        assert_eq!(
            c.body_text(b"header: Bearer abc.def-123 end"),
            "header: Bearer [redacted] end"
        );
        assert_eq!(c.body_text(b"plain text"), "plain text");
        // Binary is escaped; a cut character is dropped.
        assert_eq!(c.body_text(b"\x00\xffok"), "\\x00\\xffok");
        assert_eq!(c.body_text("caf\u{e9}".as_bytes()[..4].as_ref()), "caf");
    }

    #[test]
    fn arbitrary_bodies_never_panic() {
        let c = cap();
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let alphabet = b"\"{}[]:,=& \\abpasswordtokenBearer 1\xff";
        for _ in 0..20_000 {
            let len = (x % 40) as usize;
            let mut v = Vec::with_capacity(len);
            for _ in 0..len {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                v.push(alphabet[(x % alphabet.len() as u64) as usize]);
            }
            let out = c.body_text(&v);
            assert!(out.len() <= 12 * v.len() + 64, "{v:?} -> {out}");
        }
    }
}
