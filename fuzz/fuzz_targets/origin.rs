//! The origin allowlist: admin entries (`OriginPattern`), `Origin` headers
//! (`RequestOrigin`) and the matcher (`AllowList`).
//!
//! Input: lines. The first is an allowlist entry and the second an `Origin` header; every
//! line is also tried as both, and all lines that parse as entries form one allowlist.
//! Properties checked, beyond "never panics":
//! - normalising twice equals normalising once (for entries and for headers);
//! - an exact entry matches exactly the origins whose normalised text is its own;
//! - a wildcard entry matches only proper subdomains of its base, same scheme;
//! - `AllowList::allows` (sorted exact texts plus a wildcard scan) agrees with trying
//!   every entry's `matches`.
#![no_main]

use domain::{AllowList, OriginPattern, RequestOrigin};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let lines: Vec<&str> = text.split('\n').take(8).collect();
    let patterns: Vec<OriginPattern> = lines.iter().filter_map(|l| pattern(l)).collect();
    let origins: Vec<RequestOrigin> = lines.iter().filter_map(|l| origin(l)).collect();
    // The entries' own texts as headers: an exact entry must match its own origin.
    let own: Vec<RequestOrigin> = patterns
        .iter()
        .filter(|p| !p.as_str().contains('*'))
        .map(|p| {
            RequestOrigin::parse(p.as_str())
                .unwrap_or_else(|e| panic!("exact entry {p} is no valid Origin: {e}"))
        })
        .collect();
    let list = AllowList::new(patterns.clone());
    for o in origins.iter().chain(&own) {
        for p in &patterns {
            check_match(p, o);
        }
        let any = patterns.iter().any(|p| p.matches(o));
        assert_eq!(list.allows(o), any, "allowlist {patterns:?} vs {o}");
    }
});

fn pattern(input: &str) -> Option<OriginPattern> {
    let p = OriginPattern::parse(input).ok()?;
    let again = OriginPattern::parse(p.as_str())
        .unwrap_or_else(|e| panic!("normalised entry {p} does not parse again: {e}"));
    assert_eq!(again, p, "normalising {input:?} twice differs from once");
    assert_eq!(p.to_string(), p.as_str());
    Some(p)
}

fn origin(input: &str) -> Option<RequestOrigin> {
    let o = RequestOrigin::parse(input).ok()?;
    let again = RequestOrigin::parse(o.as_str())
        .unwrap_or_else(|e| panic!("normalised origin {o} does not parse again: {e}"));
    assert_eq!(again, o, "normalising {input:?} twice differs from once");
    assert!(
        !o.as_str().contains('*'),
        "a header origin with a wildcard: {o}"
    );
    Some(o)
}

/// `scheme`, `host` and `port` of a normalised text (`scheme://host[:port]`).
fn parts(text: &str) -> (&str, &str, Option<&str>) {
    let (scheme, rest) = text.split_once("://").expect("normalised text has ://");
    // An IPv6 host is bracketed, so the port is what follows the last `]` or `:`.
    let host_end = match rest.rfind(']') {
        Some(i) => i + 1,
        None => rest.rfind(':').unwrap_or(rest.len()),
    };
    let (host, port) = rest.split_at(host_end);
    (scheme, host, port.strip_prefix(':'))
}

fn check_match(p: &OriginPattern, o: &RequestOrigin) {
    let matched = p.matches(o);
    let (p_scheme, p_host, p_port) = parts(p.as_str());
    let (o_scheme, o_host, o_port) = parts(o.as_str());
    if matched {
        assert_eq!(p_scheme, o_scheme, "{p} matched {o} across schemes");
    }
    match (p_host.strip_prefix("*."), p_port) {
        (None, Some("*")) => {
            // `host:*`: exactly this host on any port.
            assert_eq!(
                matched,
                p_scheme == o_scheme && p_host == o_host,
                "{p} vs {o}"
            );
        }
        (None, _) => {
            // An exact entry matches only itself after normalisation.
            assert_eq!(matched, p.as_str() == o.as_str(), "{p} vs {o}");
        }
        (Some(base), port) => {
            if matched {
                let sub = o_host
                    .strip_suffix(base)
                    .and_then(|s| s.strip_suffix('.'))
                    .unwrap_or_else(|| panic!("{p} matched {o}, not under {base}"));
                assert!(!sub.is_empty(), "{p} matched its bare base {o}");
                assert!(!o_host.starts_with('['), "{p} matched an IP literal {o}");
                match port {
                    None => assert_eq!(o_port, None, "{p} matched {o}"),
                    Some("*") => {}
                    Some(n) => assert_eq!(o_port, Some(n), "{p} matched {o}"),
                }
            } else if p_scheme == o_scheme
                && o_host.len() > base.len() + 1
                && o_host.ends_with(&format!(".{base}"))
                && port.is_none_or(|n| n == "*" || Some(n) == o_port)
                && (port.is_some() || o_port.is_none())
            {
                panic!("{p} did not match its subdomain {o}");
            }
        }
    }
}
