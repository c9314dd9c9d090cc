//! Query-string redaction: names stay, values never leave the parser.

/// `/search?q=shoes&page=2` -> `/search?q=?&page=?`. A parameter without
/// `=` may itself be a secret (`/reset?TOKEN`) and becomes `?`. Fragments are
/// never sent by clients; anything after `#` is dropped the same way.
pub fn redact_query(target: &str) -> String {
    let Some((path, query)) = target.split_once('?') else {
        return target.to_string();
    };
    let query = query.split('#').next().unwrap_or("");
    let params: Vec<String> = query
        .split('&')
        .map(|p| match p.split_once('=') {
            Some((name, _)) => format!("{name}=?"),
            None if p.is_empty() => String::new(),
            None => "?".to_string(),
        })
        .collect();
    format!("{path}?{}", params.join("&"))
}

#[cfg(test)]
mod tests {
    use super::redact_query;

    #[test]
    fn values_are_replaced_names_kept() {
        assert_eq!(redact_query("/a"), "/a");
        assert_eq!(redact_query("/s?q=shoes&page=2"), "/s?q=?&page=?");
        assert_eq!(redact_query("/reset?SECRET"), "/reset??");
        assert_eq!(redact_query("/x?a=1&&b"), "/x?a=?&&?");
        assert_eq!(redact_query("/x?"), "/x?");
        assert_eq!(redact_query("/x?t=abc#frag"), "/x?t=?");
    }
}
