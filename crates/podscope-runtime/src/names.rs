//! Pod and container name matching: `*`/`?` globs and "did you mean" suggestions.

/// Whether a pattern has glob characters (`*` or `?`).
pub fn is_glob(pattern: &str) -> bool {
    pattern.contains(['*', '?'])
}

/// Matches a name against a glob where `*` is any run of characters
/// (including none) and `?` is exactly one character. No escapes: pod and
/// container names cannot hold either character.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    let (mut pi, mut ni) = (0, 0);
    // Where to resume after the last `*`: (pattern index after it, name index it covers up to).
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi + 1, ni));
            pi += 1;
        } else if let Some((sp, sn)) = star {
            // Let the last `*` swallow one more character and retry.
            pi = sp;
            ni = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// A name filter: an exact name or a glob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamePattern(String);

impl NamePattern {
    /// Wraps a pattern.
    pub fn new(pattern: impl Into<String>) -> Self {
        NamePattern(pattern.into())
    }

    /// Whether the pattern matches the name.
    pub fn matches(&self, name: &str) -> bool {
        if is_glob(&self.0) {
            glob_match(&self.0, name)
        } else {
            self.0 == name
        }
    }

    /// The pattern as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A pod selection in words, as every "no pod matches" message starts:
/// `pod web-* in namespace shop with labels app=web container nginx`.
pub fn describe_selection(
    pod: Option<&str>,
    namespace: Option<&str>,
    selector: Option<&str>,
    container: Option<&str>,
) -> String {
    let mut parts = vec![match pod {
        Some(p) => format!("pod {p}"),
        None => "pods".into(),
    }];
    parts.push(match namespace {
        Some(ns) => format!("in namespace {ns}"),
        None => "in all namespaces".into(),
    });
    if let Some(s) = selector {
        parts.push(format!("with labels {s}"));
    }
    if let Some(c) = container {
        parts.push(format!("container {c}"));
    }
    parts.join(" ")
}

/// The candidates closest to `query` by edit distance, best first, at most
/// `max`: those within a third of the query's length (at least 2 edits), or
/// that contain the query or are contained in it. For "pod not found" errors.
pub fn closest_names<'a, I>(query: &str, candidates: I, max: usize) -> Vec<String>
where
    I: IntoIterator<Item = &'a str>,
{
    let limit = (query.chars().count() / 3).max(2);
    let mut scored: Vec<(usize, &str)> = candidates
        .into_iter()
        .filter_map(|c| {
            let d = strsim::levenshtein(query, c);
            let related = !query.is_empty() && (c.contains(query) || query.contains(c));
            (d <= limit || related).then_some((d, c))
        })
        .collect();
    scored.sort();
    scored.dedup();
    scored
        .into_iter()
        .take(max)
        .map(|(_, c)| c.to_owned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        for (p, n, want) in [
            ("*", "", true),
            ("*", "anything", true),
            ("web-*", "web-7d9f", true),
            ("web-*", "web-", true),
            ("web-*", "api-1", false),
            ("*-db", "orders-db", true),
            ("*-db", "orders-db-0", false),
            ("w?b", "web", true),
            ("w?b", "wb", false),
            ("a*b*c", "aXXbYYc", true),
            ("a*b*c", "aXXbYY", false),
            ("a*a*a", "aaa", true),
            ("a*a*a", "aa", false),
            ("**x", "x", true),
            ("exact", "exact", true),
            ("exact", "exactly", false),
            ("", "", true),
            ("", "x", false),
            ("*é?", "caféx", true),
        ] {
            assert_eq!(glob_match(p, n), want, "{p} vs {n}");
        }
    }

    #[test]
    fn patterns() {
        assert!(NamePattern::new("nginx").matches("nginx"));
        assert!(!NamePattern::new("nginx").matches("nginx-1"));
        assert!(NamePattern::new("nginx*").matches("nginx-1"));
        assert!(is_glob("a?"));
        assert!(!is_glob("a-b"));
        assert_eq!(NamePattern::new("x").as_str(), "x");
    }

    #[test]
    fn suggestions() {
        let names = ["nginx-7d9f", "nginx-abcd", "redis-0", "postgres-0", "web"];
        assert_eq!(
            closest_names("redis-1", names, 3),
            vec!["redis-0".to_owned()]
        );
        assert_eq!(
            closest_names("nginx", names, 3),
            vec!["nginx-7d9f".to_owned(), "nginx-abcd".to_owned()]
        );
        assert_eq!(closest_names("wbe", names, 3), vec!["web".to_owned()]);
        assert!(closest_names("zzzzzzzz", names, 3).is_empty());
        assert_eq!(closest_names("nginx", names, 1).len(), 1);
    }
}
