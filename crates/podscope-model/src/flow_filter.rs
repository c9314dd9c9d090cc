//! The net probe's `--flow` filter: `tcp`, `udp`, `icmp`, `host ADDR`,
//! `port N`, `pod NAME`, joined with `and` (docs/probes.md, "net").

use std::fmt;
use std::net::IpAddr;

/// A parsed `--flow` filter: every term must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FlowFilter {
    /// IP protocol number (6 tcp, 17 udp, 1 icmp, 58 icmpv6), if given.
    pub protocol: Option<u8>,
    /// Each must be the packet's source or destination address.
    pub hosts: Vec<IpAddr>,
    /// Each must be its source or destination port.
    pub ports: Vec<u16>,
    /// Pod names (or globs with `*`); each must be the packet's pod.
    pub pods: Vec<String>,
    /// The text it was parsed from.
    pub text: String,
}

/// How many `host` and `port` terms the kernel compares.
pub const FLOW_FILTER_MAX_HOSTS: usize = 2;
/// See [`FLOW_FILTER_MAX_HOSTS`].
pub const FLOW_FILTER_MAX_PORTS: usize = 2;

/// What was wrong with a `--flow` filter, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowFilterError {
    /// The filter as given.
    pub text: String,
    /// 1-based number of the offending word (0: the whole filter).
    pub word: usize,
    /// What was wrong and what would be right.
    pub message: String,
}

impl fmt::Display for FlowFilterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.word > 0 {
            write!(
                f,
                "--flow '{}': word {}: {}",
                self.text, self.word, self.message
            )?;
        } else {
            write!(f, "--flow '{}': {}", self.text, self.message)?;
        }
        write!(
            f,
            " (terms: tcp, udp, icmp, icmpv6, host ADDR, port N, pod NAME, joined with 'and'; \
             e.g. --flow 'tcp and port 80 and host 10.0.0.5')"
        )
    }
}

impl std::error::Error for FlowFilterError {}

impl FlowFilter {
    /// Parses `tcp and port 80 and pod web-0`.
    pub fn parse(text: &str) -> Result<FlowFilter, FlowFilterError> {
        let err = |word: usize, message: String| FlowFilterError {
            text: text.to_string(),
            word,
            message,
        };
        let words: Vec<&str> = text.split_whitespace().collect();
        if words.is_empty() {
            return Err(err(0, "the filter is empty".into()));
        }
        let mut f = FlowFilter {
            text: text.to_string(),
            ..FlowFilter::default()
        };
        let mut i = 0;
        let mut want_term = true;
        while i < words.len() {
            let w = words[i];
            let n = i + 1;
            if !want_term {
                if w != "and" {
                    let hint = if w == "or" || w == "not" {
                        format!("'{w}' is not supported: terms can only be joined with 'and'")
                    } else {
                        format!("expected 'and' before '{w}'")
                    };
                    return Err(err(n, hint));
                }
                want_term = true;
                i += 1;
                continue;
            }
            let proto = match w {
                "tcp" => Some(6),
                "udp" => Some(17),
                "icmp" => Some(1),
                "icmpv6" | "icmp6" => Some(58),
                _ => None,
            };
            if let Some(p) = proto {
                if f.protocol.is_some_and(|q| q != p) {
                    return Err(err(
                        n,
                        format!(
                            "'{w}' after another protocol: a packet has one, so this never matches"
                        ),
                    ));
                }
                f.protocol = Some(p);
                i += 1;
            } else if matches!(w, "host" | "port" | "pod") {
                let Some(v) = words.get(i + 1) else {
                    return Err(err(n, format!("'{w}' needs a value after it")));
                };
                if *v == "and" {
                    return Err(err(n + 1, format!("'{w}' needs a value, got 'and'")));
                }
                match w {
                    "host" => {
                        let a: IpAddr = v.parse().map_err(|_| {
                            err(
                                n + 1,
                                format!("'{v}' is not an IPv4 or IPv6 address (host names are not looked up)"),
                            )
                        })?;
                        if f.hosts.len() == FLOW_FILTER_MAX_HOSTS {
                            return Err(err(
                                n,
                                format!("at most {FLOW_FILTER_MAX_HOSTS} host terms"),
                            ));
                        }
                        f.hosts.push(a);
                    }
                    "port" => {
                        let p: u16 = v.parse().ok().filter(|p| *p > 0).ok_or_else(|| {
                            err(n + 1, format!("'{v}' is not a port number (1-65535)"))
                        })?;
                        if f.ports.len() == FLOW_FILTER_MAX_PORTS {
                            return Err(err(
                                n,
                                format!("at most {FLOW_FILTER_MAX_PORTS} port terms"),
                            ));
                        }
                        f.ports.push(p);
                    }
                    _ => f.pods.push(v.to_string()),
                }
                i += 2;
            } else if w == "and" {
                return Err(err(n, "'and' needs a term before it".into()));
            } else {
                return Err(err(n, format!("unknown term '{w}'")));
            }
            want_term = false;
        }
        if want_term {
            return Err(err(words.len(), "the filter ends with 'and'".into()));
        }
        Ok(f)
    }

    /// Whether a pod name passes the `pod` terms (no terms: any).
    pub fn pod_matches(&self, pod: &str) -> bool {
        self.pods.iter().all(|p| glob(p, pod))
    }
}

fn glob(pat: &str, s: &str) -> bool {
    match pat.split_once('*') {
        None => pat == s,
        Some((pre, rest)) => {
            let Some(tail) = s.strip_prefix(pre) else {
                return false;
            };
            if !rest.contains('*') {
                return tail.ends_with(rest);
            }
            (0..=tail.len()).any(|k| tail.is_char_boundary(k) && glob(rest, &tail[k..]))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terms_joined_with_and() {
        let f = FlowFilter::parse("tcp and port 80 and host 10.0.0.5 and pod web-*").unwrap();
        assert_eq!(f.protocol, Some(6));
        assert_eq!(f.ports, vec![80]);
        assert_eq!(f.hosts, vec!["10.0.0.5".parse::<IpAddr>().unwrap()]);
        assert!(f.pod_matches("web-0"));
        assert!(!f.pod_matches("db-0"));
        assert_eq!(FlowFilter::parse("udp").unwrap().protocol, Some(17));
        assert_eq!(
            FlowFilter::parse("host ::1").unwrap().hosts,
            vec!["::1".parse::<IpAddr>().unwrap()]
        );
    }

    #[test]
    fn errors_name_the_word_and_the_fix() {
        let e = |t: &str| FlowFilter::parse(t).unwrap_err();
        let x = e("tcp and prot 80");
        assert_eq!(x.word, 3);
        assert!(x.to_string().contains("unknown term 'prot'"), "{x}");
        assert!(x.to_string().contains("port N"), "{x}");
        assert!(e("port http")
            .to_string()
            .contains("'http' is not a port number"));
        assert!(e("port 0").to_string().contains("not a port number"));
        assert!(e("host example.com")
            .to_string()
            .contains("not an IPv4 or IPv6 address"));
        assert!(e("tcp or udp")
            .to_string()
            .contains("'or' is not supported"));
        assert!(e("tcp port 80")
            .to_string()
            .contains("expected 'and' before 'port'"));
        assert!(e("tcp and").to_string().contains("ends with 'and'"));
        assert!(e("tcp and udp").to_string().contains("never matches"));
        assert!(e("port").to_string().contains("needs a value"));
        assert!(e("").to_string().contains("empty"));
        assert!(e("port 1 and port 2 and port 3")
            .to_string()
            .contains("at most 2"));
    }
}
