//! Browser origins and the per-key allowlist they are checked against.
//!
//! A client key may only be used from the origins its owner listed. Entries are parsed
//! once, when the admin command arrives, into an [`OriginPattern`] that can only exist
//! normalised; every public request's `Origin` header becomes a [`RequestOrigin`] through
//! the same normalisation, so matching compares like with like (see API.md, "Origin
//! allowlist rules"). The header is parsed on every public request, so canonical ASCII
//! origins take a fast path that skips `url::Url::parse`.

use std::collections::HashSet;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use url::{Host, Url};

/// Why an allowlist entry or an `Origin` header was refused; each message names the input
/// so an admin sees which entry to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OriginError {
    #[error("invalid origin: it is empty")]
    Empty,
    #[error("invalid origin `null`: an opaque origin never matches")]
    Null,
    #[error("invalid origin `{0}`: expected scheme://host[:port]")]
    Malformed(String),
    #[error("invalid origin `{0}`: scheme must be http or https")]
    UnsupportedScheme(String),
    #[error("invalid origin `{0}`: userinfo is not allowed")]
    Userinfo(String),
    #[error("invalid origin `{0}`: a path is not allowed")]
    Path(String),
    #[error("invalid origin `{0}`: a query is not allowed")]
    Query(String),
    #[error("invalid origin `{0}`: a fragment is not allowed")]
    Fragment(String),
    #[error("invalid origin `{0}`: host is empty")]
    EmptyHost(String),
    #[error("invalid origin `{0}`: host is not valid")]
    InvalidHost(String),
    #[error("invalid origin `{0}`: port must be a number from 0 to 65535")]
    InvalidPort(String),
    #[error(
        "invalid origin `{0}`: a wildcard must be a whole left-most `*.` label \
         followed by a domain of at least two labels"
    )]
    InvalidWildcard(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Scheme {
    Http,
    Https,
}

impl Scheme {
    fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }

    fn default_port(self) -> u16 {
        match self {
            Scheme::Http => 80,
            Scheme::Https => 443,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum HostPattern {
    Exact(String),
    /// The parent domain with a leading dot (`.example.com`), so a match is a plain
    /// suffix test that cannot be fooled by `evil-example.com`.
    Subdomains(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum PortPattern {
    /// No port written, or the scheme's default one.
    Default,
    Exact(u16),
    Any,
}

/// An allowlist entry, normalised, so two spellings of one origin are one entry and
/// matching never re-parses it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct OriginPattern {
    text: String,
    scheme: Scheme,
    host: HostPattern,
    port: PortPattern,
}

impl OriginPattern {
    /// Parses an admin-supplied entry such as `https://*.example.com` or
    /// `http://localhost:*`; anything but `scheme://host[:port]` is refused.
    pub fn parse(input: &str) -> Result<Self, OriginError> {
        let raw = split_origin(input)?;
        let port = match raw.port {
            None => PortPattern::Default,
            Some("*") => PortPattern::Any,
            Some(p) => match parse_port(raw.scheme, p, input)? {
                None => PortPattern::Default,
                Some(n) => PortPattern::Exact(n),
            },
        };
        let (host, host_text) = if let Some(parent) = raw.host.strip_prefix("*.") {
            let bad = || OriginError::InvalidWildcard(input.to_owned());
            if parent.is_empty() || parent.contains('*') {
                return Err(bad());
            }
            let (parent, is_domain) = normalise_host(raw.scheme, parent, input)?;
            let labels_ok = parent.split('.').all(|label| !label.is_empty());
            if !is_domain || !labels_ok || parent.split('.').count() < 2 {
                return Err(bad());
            }
            let text = format!("*.{parent}");
            (HostPattern::Subdomains(format!(".{parent}")), text)
        } else if raw.host.contains('*') {
            return Err(OriginError::InvalidWildcard(input.to_owned()));
        } else {
            let (host, _) = normalise_host(raw.scheme, raw.host, input)?;
            (HostPattern::Exact(host.clone()), host)
        };
        let port_text = match port {
            PortPattern::Default => String::new(),
            PortPattern::Exact(n) => format!(":{n}"),
            PortPattern::Any => ":*".to_owned(),
        };
        Ok(Self {
            text: format!("{}://{host_text}{port_text}", raw.scheme.as_str()),
            scheme: raw.scheme,
            host,
            port,
        })
    }

    /// The normalised text, which is what gets stored and shown back to admins.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether a request from `origin` is covered by this entry.
    pub fn matches(&self, origin: &RequestOrigin) -> bool {
        let port_ok = match self.port {
            PortPattern::Default => origin.port.is_none(),
            PortPattern::Exact(n) => origin.port == Some(n),
            PortPattern::Any => true,
        };
        let host = origin.host();
        let host_ok = match &self.host {
            HostPattern::Exact(h) => host == h,
            HostPattern::Subdomains(dot_parent) => {
                host.len() > dot_parent.len() && host.ends_with(dot_parent.as_str())
            }
        };
        self.scheme == origin.scheme && port_ok && host_ok
    }

    /// Whether this is `*.<d>` where `d` is itself on the Public Suffix List (ICANN or
    /// private section: `co.uk`, `github.io`), so it would admit every site under `d`.
    /// The list is compiled into the `psl` crate: no I/O (see the README for its
    /// version and how to update it).
    pub fn is_wildcard_over_public_suffix(&self) -> bool {
        let HostPattern::Subdomains(dot_parent) = &self.host else {
            return false;
        };
        let parent = dot_parent.trim_start_matches('.');
        psl::suffix(parent.as_bytes()).is_some_and(|suffix| suffix.as_bytes() == parent.as_bytes())
    }

    /// Exact entries are served from a hash set by [`AllowList`]; only these are scanned.
    fn is_wildcard(&self) -> bool {
        matches!(self.host, HostPattern::Subdomains(_)) || self.port == PortPattern::Any
    }
}

impl FromStr for OriginPattern {
    type Err = OriginError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl TryFrom<String> for OriginPattern {
    type Error = OriginError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<OriginPattern> for String {
    fn from(pattern: OriginPattern) -> Self {
        pattern.text
    }
}

impl fmt::Display for OriginPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// A request's `Origin` header after normalisation; only a real `http(s)` tuple origin
/// can be one, so `null` and anything with a path never reaches matching.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RequestOrigin {
    text: String,
    scheme: Scheme,
    /// Byte offset in `text` where the host ends (it starts after `scheme://`).
    host_end: usize,
    port: Option<u16>,
}

impl RequestOrigin {
    /// Parses an `Origin` header value; wildcards are never accepted here.
    pub fn parse(header_value: &str) -> Result<Self, OriginError> {
        match parse_canonical(header_value) {
            Some(origin) => Ok(origin),
            None => parse_full(header_value),
        }
    }

    /// The normalised origin, fit to echo in `Access-Control-Allow-Origin`.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    fn host(&self) -> &str {
        let start = self.scheme.as_str().len() + "://".len();
        self.text.get(start..self.host_end).unwrap_or_default()
    }

    fn from_parts(scheme: Scheme, host: &str, port: Option<u16>) -> Self {
        let mut text = format!("{}://{host}", scheme.as_str());
        let host_end = text.len();
        if let Some(n) = port {
            text.push_str(&format!(":{n}"));
        }
        Self {
            text,
            scheme,
            host_end,
            port,
        }
    }
}

impl fmt::Display for RequestOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// The origins one client key may be used from; checked on every public request.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(from = "Vec<OriginPattern>", into = "Vec<OriginPattern>")]
pub struct AllowList {
    entries: Vec<OriginPattern>,
    /// Normalised text of the entries without wildcards, sorted: an origin matches one
    /// of them exactly when its own normalised text is equal. A binary search over a few
    /// short strings costs a fraction of hashing the origin, on every public request.
    exact: Vec<String>,
    wildcards: Vec<OriginPattern>,
}

impl AllowList {
    /// Builds the list, dropping repeated entries and keeping the first-seen order so
    /// admins get back what they sent.
    pub fn new(entries: Vec<OriginPattern>) -> Self {
        let mut seen = HashSet::new();
        let entries: Vec<OriginPattern> = entries
            .into_iter()
            .filter(|e| seen.insert(e.text.clone()))
            .collect();
        let mut exact: Vec<String> = entries
            .iter()
            .filter(|e| !e.is_wildcard())
            .map(|e| e.text.clone())
            .collect();
        exact.sort_unstable();
        let wildcards = entries
            .iter()
            .filter(|e| e.is_wildcard())
            .cloned()
            .collect();
        Self {
            entries,
            exact,
            wildcards,
        }
    }

    pub fn entries(&self) -> &[OriginPattern] {
        &self.entries
    }

    /// Whether any entry covers `origin`.
    pub fn allows(&self, origin: &RequestOrigin) -> bool {
        self.lists_exactly(origin.as_str()) || self.wildcards.iter().any(|p| p.matches(origin))
    }

    /// Whether `text` is, byte for byte, one of the entries without a wildcard: those are
    /// normalised origins, so such a text is a valid origin this list allows, with no
    /// parsing. `false` says nothing (the text may still be allowed once normalised, or
    /// by a wildcard): ask [`AllowList::allows`] with the parsed origin.
    pub fn lists_exactly(&self, text: &str) -> bool {
        self.exact
            .binary_search_by(|e| e.as_str().cmp(text))
            .is_ok()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

// The index fields are derived from `entries`, so equality is the entries' alone.
impl PartialEq for AllowList {
    fn eq(&self, other: &Self) -> bool {
        self.entries == other.entries
    }
}

impl Eq for AllowList {}

impl From<Vec<OriginPattern>> for AllowList {
    fn from(entries: Vec<OriginPattern>) -> Self {
        Self::new(entries)
    }
}

impl From<AllowList> for Vec<OriginPattern> {
    fn from(list: AllowList) -> Self {
        list.entries
    }
}

/// An origin cut into its parts, before the host and port are normalised.
struct RawOrigin<'a> {
    scheme: Scheme,
    host: &'a str,
    port: Option<&'a str>,
}

/// Splits `scheme://host[:port][/]` ourselves rather than trusting `Url::parse`, which
/// would silently accept `https:a.test`, strip tabs, read `\` as `/` and so on.
fn split_origin(input: &str) -> Result<RawOrigin<'_>, OriginError> {
    let named = || input.to_owned();
    if input.is_empty() {
        return Err(OriginError::Empty);
    }
    if input == "null" {
        return Err(OriginError::Null);
    }
    if input.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(OriginError::Malformed(named()));
    }
    let Some((scheme, rest)) = input.split_once("://") else {
        return Err(OriginError::Malformed(named()));
    };
    let scheme = if scheme.eq_ignore_ascii_case("http") {
        Scheme::Http
    } else if scheme.eq_ignore_ascii_case("https") {
        Scheme::Https
    } else if scheme.is_empty() {
        return Err(OriginError::Malformed(named()));
    } else {
        return Err(OriginError::UnsupportedScheme(named()));
    };

    let authority_end = rest.find(['/', '?', '#', '\\']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    if authority.is_empty() {
        return Err(OriginError::EmptyHost(named()));
    }
    // A lone trailing `/` is the only thing allowed after the authority.
    match tail.strip_prefix('/').unwrap_or(tail).chars().next() {
        None => {}
        Some('?') => return Err(OriginError::Query(named())),
        Some('#') => return Err(OriginError::Fragment(named())),
        Some(_) => return Err(OriginError::Path(named())),
    }
    if authority.contains('@') {
        return Err(OriginError::Userinfo(named()));
    }

    let (host, port) = if authority.starts_with('[') {
        let host_end = authority.find(']').map_or(authority.len(), |i| i + 1);
        let (host, after) = authority.split_at(host_end);
        match after {
            "" => (host, None),
            _ => match after.strip_prefix(':') {
                Some(port) => (host, Some(port)),
                None => return Err(OriginError::InvalidHost(named())),
            },
        }
    } else {
        match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err(OriginError::EmptyHost(named()));
    }
    Ok(RawOrigin { scheme, host, port })
}

/// Parses a written port; the scheme's default port comes back as `None` because it is
/// dropped from the normalised form.
fn parse_port(scheme: Scheme, port: &str, input: &str) -> Result<Option<u16>, OriginError> {
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err(OriginError::InvalidPort(input.to_owned()));
    }
    let n: u16 = port
        .parse()
        .map_err(|_| OriginError::InvalidPort(input.to_owned()))?;
    Ok((n != scheme.default_port()).then_some(n))
}

/// Lower-cases, applies IDNA and canonicalises IP literals through `url`, which is what
/// browsers do before sending `Origin`. Returns the host and whether it is a domain name.
fn normalise_host(scheme: Scheme, host: &str, input: &str) -> Result<(String, bool), OriginError> {
    let invalid = || OriginError::InvalidHost(input.to_owned());
    // `url` would percent-decode the host, and IDNA maps look-alikes such as `＊` onto
    // ASCII; neither belongs in an origin, and a `*` must never come out of normalisation.
    if host.contains(['%', '*']) {
        return Err(invalid());
    }
    // Only the host is left in `host`: the split above removed everything `Url` might
    // read as userinfo, port, path, query or fragment.
    let url = Url::parse(&format!("{}://{host}/", scheme.as_str())).map_err(|_| invalid())?;
    let normalised = match url.host() {
        // `url` accepts empty labels (`a..b`, `.a.test`); only a final dot is a real name.
        Some(Host::Domain(d))
            if !d.contains('*')
                && !d
                    .strip_suffix('.')
                    .unwrap_or(d)
                    .split('.')
                    .any(str::is_empty) =>
        {
            (d.to_owned(), true)
        }
        Some(Host::Ipv4(ip)) => (ip.to_string(), false),
        Some(Host::Ipv6(ip)) => (format!("[{ip}]"), false),
        Some(Host::Domain(_)) | None => return Err(invalid()),
    };
    Ok(normalised)
}

/// The full, always-correct parse behind [`RequestOrigin::parse`].
fn parse_full(input: &str) -> Result<RequestOrigin, OriginError> {
    let raw = split_origin(input)?;
    let port = match raw.port {
        Some(p) => parse_port(raw.scheme, p, input)?,
        None => None,
    };
    let (host, _) = normalise_host(raw.scheme, raw.host, input)?;
    Ok(RequestOrigin::from_parts(raw.scheme, &host, port))
}

/// Recognises an origin already in normalised form (what browsers send) without
/// allocating a `Url`. `None` means "not sure", never "invalid": the caller then takes the
/// full parse, and the tests check that both agree.
fn parse_canonical(input: &str) -> Option<RequestOrigin> {
    let (scheme, rest) = match input.strip_prefix("https://") {
        Some(rest) => (Scheme::Https, rest),
        None => (Scheme::Http, input.strip_prefix("http://")?),
    };
    let (host, port) = match rest.split_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (rest, None),
    };
    let port = match port {
        None => None,
        Some(p) => {
            let canonical_digits = !p.is_empty()
                && p.len() <= 5
                && !p.starts_with('0')
                && p.bytes().all(|b| b.is_ascii_digit());
            if !canonical_digits {
                return None;
            }
            let n: u16 = p.parse().ok()?;
            if n == scheme.default_port() {
                return None;
            }
            Some(n)
        }
    };
    let plain_label = |label: &str| {
        !label.is_empty()
            && !label.starts_with("xn--")
            && label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    };
    // A last label starting with a digit may be an IPv4 address in one of its many
    // spellings (`127.1`, `0x7f.0.0.1`); punycode labels need IDNA validation.
    let last_is_name = host
        .rsplit('.')
        .next()
        .and_then(|label| label.bytes().next())
        .is_some_and(|b| !b.is_ascii_digit());
    if !last_is_name || !host.split('.').all(plain_label) {
        return None;
    }
    Some(RequestOrigin {
        text: input.to_owned(),
        scheme,
        host_end: scheme.as_str().len() + "://".len() + host.len(),
        port,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    fn pattern(s: &str) -> OriginPattern {
        OriginPattern::parse(s).expect("test pattern is valid")
    }

    fn origin(s: &str) -> RequestOrigin {
        RequestOrigin::parse(s).expect("test origin is valid")
    }

    fn allows(entries: &[&str], o: &str) -> bool {
        let list = AllowList::new(entries.iter().map(|e| pattern(e)).collect());
        let via_list = list.allows(&origin(o));
        let via_scan = list.entries().iter().any(|p| p.matches(&origin(o)));
        assert_eq!(
            via_list, via_scan,
            "the sorted lookup disagrees with a scan for {o}"
        );
        if list.lists_exactly(o) {
            assert!(via_list, "{o} is listed exactly but not allowed");
        }
        via_list
    }

    #[test]
    fn only_an_origin_spelt_as_listed_skips_parsing() {
        // Given a list with an exact entry sent in an odd spelling, and a wildcard
        let list = AllowList::new(vec![
            pattern("HTTPS://App.Example.COM:443"),
            pattern("https://*.acme.test"),
        ]);
        // Then the entry's normalised text is listed exactly
        assert!(list.lists_exactly("https://app.example.com"));
        // And the same origin spelt otherwise, or covered by the wildcard, is allowed only
        // once parsed
        for text in ["https://App.example.com", "https://app.example.com:443"] {
            assert!(!list.lists_exactly(text), "{text}");
            assert!(list.allows(&origin(text)), "{text}");
        }
        assert!(!list.lists_exactly("https://x.acme.test"));
        assert!(list.allows(&origin("https://x.acme.test")));
        // And nothing that is not the entry byte for byte is listed
        for text in [
            "https://app.example.com/",
            "https://app.example.co",
            "",
            "null",
        ] {
            assert!(!list.lists_exactly(text), "{text}");
        }
    }

    #[test]
    fn entries_are_normalised() {
        let cases = [
            ("HTTPS://App.Example.COM", "https://app.example.com"),
            ("https://a.test:443", "https://a.test"),
            ("http://a.test:80", "http://a.test"),
            ("http://a.test:443", "http://a.test:443"),
            ("https://a.test:0080", "https://a.test:80"),
            ("https://a.test/", "https://a.test"),
            ("https://bücher.example", "https://xn--bcher-kva.example"),
            ("http://127.0.0.1:8080/", "http://127.0.0.1:8080"),
            ("http://[::1]:3000", "http://[::1]:3000"),
            ("https://[0:0::1]:443", "https://[::1]"),
            ("HTTPS://*.Example.com:443/", "https://*.example.com"),
            (
                "https://*.bücher.example",
                "https://*.xn--bcher-kva.example",
            ),
            ("http://localhost:*", "http://localhost:*"),
            ("https://*.example.com:*", "https://*.example.com:*"),
        ];
        for (input, expected) in cases {
            assert_eq!(pattern(input).as_str(), expected, "normalising {input}");
            assert_eq!(pattern(input).to_string(), expected);
        }
    }

    #[test]
    fn request_origins_are_normalised_the_same_way() {
        assert_eq!(
            origin("HTTPS://App.Example.com:443").as_str(),
            "https://app.example.com"
        );
        assert_eq!(
            origin("http://localhost:3000/").as_str(),
            "http://localhost:3000"
        );
        assert_eq!(
            origin("https://bücher.example").as_str(),
            "https://xn--bcher-kva.example"
        );
    }

    #[test]
    fn every_malformed_entry_is_rejected_with_the_matching_reason() {
        use OriginError::*;
        let s = |v: &str| v.to_owned();
        let cases = [
            ("", Empty),
            ("null", Null),
            ("garbage", Malformed(s("garbage"))),
            ("example.com", Malformed(s("example.com"))),
            ("https:example.com", Malformed(s("https:example.com"))),
            ("://a.test", Malformed(s("://a.test"))),
            (" https://a.test", Malformed(s(" https://a.test"))),
            ("https://a\t.test", Malformed(s("https://a\t.test"))),
            ("ftp://a.test", UnsupportedScheme(s("ftp://a.test"))),
            (
                "javascript://a.test",
                UnsupportedScheme(s("javascript://a.test")),
            ),
            ("https://a.test/app", Path(s("https://a.test/app"))),
            ("https://a.test//", Path(s("https://a.test//"))),
            ("https://a.test\\", Path(s("https://a.test\\"))),
            ("https://a.test?x=1", Query(s("https://a.test?x=1"))),
            ("https://a.test/?x=1", Query(s("https://a.test/?x=1"))),
            ("https://a.test#top", Fragment(s("https://a.test#top"))),
            ("https://user@a.test", Userinfo(s("https://user@a.test"))),
            ("https://u:p@a.test", Userinfo(s("https://u:p@a.test"))),
            ("https://", EmptyHost(s("https://"))),
            ("https://:8080", EmptyHost(s("https://:8080"))),
            ("https:///a.test", EmptyHost(s("https:///a.test"))),
            ("https://a.test:", InvalidPort(s("https://a.test:"))),
            (
                "https://a.test:65536",
                InvalidPort(s("https://a.test:65536")),
            ),
            ("https://a.test:8o", InvalidPort(s("https://a.test:8o"))),
            ("https://a%2etest", InvalidHost(s("https://a%2etest"))),
            ("https://[::1", InvalidHost(s("https://[::1"))),
            ("https://[::1]x", InvalidHost(s("https://[::1]x"))),
            ("https://a<b.test", InvalidHost(s("https://a<b.test"))),
            ("https://a..test", InvalidHost(s("https://a..test"))),
            ("https://.a.test", InvalidHost(s("https://.a.test"))),
            ("https://.", InvalidHost(s("https://."))),
            ("https://*", InvalidWildcard(s("https://*"))),
            ("https://*.", InvalidWildcard(s("https://*."))),
            ("https://*.com", InvalidWildcard(s("https://*.com"))),
            ("https://*.com.", InvalidWildcard(s("https://*.com."))),
            (
                "https://*.*.example.com",
                InvalidWildcard(s("https://*.*.example.com")),
            ),
            ("https://a.*.com", InvalidWildcard(s("https://a.*.com"))),
            ("https://*foo.com", InvalidWildcard(s("https://*foo.com"))),
            (
                "https://*.example..com",
                InvalidHost(s("https://*.example..com")),
            ),
            (
                "https://*.10.0.0.1",
                InvalidWildcard(s("https://*.10.0.0.1")),
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(
                OriginPattern::parse(input),
                Err(expected),
                "parsing {input:?}"
            );
        }
    }

    #[test]
    fn errors_name_the_offending_entry() {
        let err = OriginPattern::parse("ftp://a.test").expect_err("ftp is refused");
        assert_eq!(
            err.to_string(),
            "invalid origin `ftp://a.test`: scheme must be http or https"
        );
    }

    #[test]
    fn a_request_origin_rejects_null_paths_queries_userinfo_and_wildcards() {
        for input in [
            "null",
            "",
            "file://",
            "https://a.test/x",
            "https://a.test?x",
            "https://a.test#x",
            "https://u@a.test",
            "https://*.a.test",
            "http://localhost:*",
            "https://*",
        ] {
            assert!(
                RequestOrigin::parse(input).is_err(),
                "{input:?} must be refused"
            );
        }
    }

    #[test]
    fn an_exact_entry_matches_only_the_same_origin() {
        assert!(allows(
            &["https://app.example.com"],
            "https://app.example.com"
        ));
        assert!(allows(
            &["https://app.example.com"],
            "https://APP.example.com:443/"
        ));
        assert!(allows(&["http://[::1]:3000"], "http://[0::1]:3000"));
        assert!(!allows(&["https://app.example.com"], "https://example.com"));
        assert!(!allows(
            &["https://app.example.com"],
            "https://other.example.com"
        ));
    }

    #[test]
    fn wildcards_over_a_public_suffix_are_recognised_in_both_sections_of_the_list() {
        let over = |entry: &str| {
            OriginPattern::parse(entry)
                .expect("a well-formed entry")
                .is_wildcard_over_public_suffix()
        };
        // ICANN section, a private-section suffix, a wildcard rule (`*.ck`), and an IDN
        // suffix stored in punycode (`公司.cn`).
        for entry in [
            "https://*.co.uk",
            "https://*.github.io",
            "https://*.CO.UK",
            "https://*.foo.ck",
            "https://*.xn--55qx5d.cn",
            "https://*.公司.cn",
            "http://*.co.uk:*",
        ] {
            assert!(over(entry), "{entry} should be refused");
        }
        for entry in [
            "https://*.example.co.uk",
            "https://*.example.github.io",
            "https://*.example.com",
            "https://*.acme.test",
            "https://github.io",
            "https://co.uk",
            "http://localhost:*",
        ] {
            assert!(!over(entry), "{entry} should be accepted");
        }
    }

    #[test]
    fn a_different_port_does_not_match() {
        assert!(!allows(&["https://a.test"], "https://a.test:8443"));
        assert!(!allows(&["https://a.test:8443"], "https://a.test"));
        assert!(!allows(&["http://localhost:3000"], "http://localhost:3001"));
        assert!(allows(&["http://localhost:3000"], "http://localhost:3000"));
    }

    #[test]
    fn a_different_scheme_does_not_match() {
        assert!(!allows(&["http://a.test"], "https://a.test"));
        assert!(!allows(&["https://a.test"], "http://a.test"));
        assert!(!allows(&["http://*.a.test"], "https://x.a.test"));
        assert!(!allows(&["http://localhost:*"], "https://localhost:3000"));
    }

    #[test]
    fn a_lookalike_suffix_or_prefix_never_matches() {
        for entry in ["https://example.com", "https://*.example.com"] {
            assert!(!allows(&[entry], "https://example.com.evil.net"));
            assert!(!allows(&[entry], "https://evil-example.com"));
            assert!(!allows(&[entry], "https://a.evil-example.com"));
            assert!(!allows(&[entry], "https://example.co"));
        }
    }

    #[test]
    fn a_wildcard_never_matches_the_apex_domain() {
        assert!(!allows(&["https://*.example.com"], "https://example.com"));
        assert!(allows(&["https://example.com"], "https://example.com"));
    }

    #[test]
    fn a_wildcard_matches_subdomains_at_any_depth() {
        assert!(allows(&["https://*.example.com"], "https://a.example.com"));
        assert!(allows(
            &["https://*.example.com"],
            "https://a.b.example.com"
        ));
        assert!(allows(
            &["https://*.example.com"],
            "https://x-1.y.z.example.com"
        ));
        assert!(!allows(
            &["https://*.example.com"],
            "https://a.example.com:8443"
        ));
    }

    #[test]
    fn a_port_wildcard_matches_any_port_including_the_default() {
        let entries = ["http://localhost:*"];
        assert!(allows(&entries, "http://localhost:3000"));
        assert!(allows(&entries, "http://localhost:1"));
        assert!(allows(&entries, "http://localhost"));
        assert!(allows(&entries, "http://localhost:80"));
        assert!(!allows(&entries, "http://localhost.evil.net:3000"));
        assert!(!allows(&entries, "http://127.0.0.1:3000"));

        let both = ["https://*.example.com:*"];
        assert!(allows(&both, "https://a.example.com:8443"));
        assert!(allows(&both, "https://a.b.example.com"));
        assert!(!allows(&both, "https://example.com:8443"));
    }

    #[test]
    fn an_empty_allowlist_allows_nothing() {
        let list = AllowList::default();
        assert!(list.is_empty());
        assert!(!list.allows(&origin("https://a.test")));
    }

    #[test]
    fn duplicate_entries_are_dropped_keeping_first_seen_order() {
        let list = AllowList::new(vec![
            pattern("https://b.test"),
            pattern("https://a.test"),
            pattern("HTTPS://B.test:443/"),
            pattern("http://localhost:*"),
            pattern("http://LOCALHOST:*"),
        ]);
        let texts: Vec<&str> = list.entries().iter().map(OriginPattern::as_str).collect();
        assert_eq!(
            texts,
            ["https://b.test", "https://a.test", "http://localhost:*"]
        );
        assert_eq!(list.len(), 3);
    }

    #[test]
    fn an_allowlist_round_trips_through_json_as_normalised_strings() {
        let list: AllowList =
            serde_json::from_str(r#"["HTTPS://A.test:443", "http://localhost:*"]"#)
                .expect("valid list");
        let json = serde_json::to_string(&list).expect("serialises");
        assert_eq!(json, r#"["https://a.test","http://localhost:*"]"#);
        let back: AllowList = serde_json::from_str(&json).expect("round trips");
        assert_eq!(back, list);
        assert!(back.allows(&origin("http://localhost:5173")));
    }

    #[test]
    fn every_exact_entry_of_a_longer_list_matches_whatever_order_it_was_given_in() {
        let entries = [
            "https://zeta.test",
            "https://alpha.test",
            "https://*.wild.test",
            "http://localhost:3000",
            "https://mid.test",
        ];
        for origin in [
            "https://zeta.test",
            "https://alpha.test",
            "http://localhost:3000",
            "https://mid.test",
            "https://a.wild.test",
        ] {
            assert!(allows(&entries, origin), "{origin}");
        }
        for origin in ["https://beta.test", "https://zzz.test", "https://aaa.test"] {
            assert!(!allows(&entries, origin), "{origin}");
        }
    }

    #[test]
    fn an_allowlist_with_an_invalid_entry_fails_to_deserialize_naming_it() {
        let err = serde_json::from_str::<AllowList>(r#"["https://a.test", "https://a.test/app"]"#)
            .expect_err("a path is refused");
        assert!(
            err.to_string()
                .contains("invalid origin `https://a.test/app`: a path is not allowed"),
            "{err}"
        );
    }

    /// Inputs that exercise both the fast path and the fallback.
    const EQUIVALENCE_TABLE: &[&str] = &[
        "https://app.example.com",
        "http://localhost:3000",
        "http://localhost",
        "https://a.test:8443",
        "https://a.test:443",
        "http://a.test:80",
        "https://a.test:0",
        "https://a.test:08443",
        "https://a.test:65535",
        "https://a.test:65536",
        "https://a.test:99999",
        "https://a.test:",
        "https://A.test",
        "https://a.test/",
        "https://127.0.0.1",
        "https://127.1",
        "https://0x7f.0.0.1",
        "https://1.2.3.4.5",
        "https://a.1",
        "https://a.1a",
        "https://xn--bcher-kva.example",
        "https://xn--zz.example",
        "https://xn--.example",
        "https://-a-.example",
        "https://a--b.example",
        "https://a..b",
        "https://.a.test",
        "https://a.test.",
        "https://a",
        "https://-",
        "https://",
        "http://[::1]:8080",
        "null",
    ];

    fn assert_fast_path_agrees(input: &str) -> bool {
        match parse_canonical(input) {
            Some(fast) => {
                assert_eq!(
                    parse_full(input),
                    Ok(fast),
                    "fast path disagrees on {input:?}"
                );
                true
            }
            None => false,
        }
    }

    #[test]
    fn the_fast_path_gives_the_same_result_as_the_full_parse() {
        let hits = EQUIVALENCE_TABLE
            .iter()
            .filter(|input| assert_fast_path_agrees(input))
            .count();
        assert!(
            hits >= 8,
            "the fast path should take the common cases, took {hits}"
        );
        assert!(parse_canonical("https://app.example.com").is_some());
        assert!(parse_canonical("http://localhost:3000").is_some());
    }

    #[test]
    fn the_fast_path_agrees_with_the_full_parse_on_random_ascii_origins() {
        const HOST_BYTES: &[u8] = b"abz09.-x:n";
        let mut rng = StdRng::seed_from_u64(7);
        let mut hits = 0;
        for _ in 0..20_000 {
            let len = rng.random_range(1..12);
            let host: String = (0..len)
                .map(|_| char::from(HOST_BYTES[rng.random_range(0..HOST_BYTES.len())]))
                .collect();
            let scheme = if rng.random_bool(0.5) {
                "http"
            } else {
                "https"
            };
            if assert_fast_path_agrees(&format!("{scheme}://{host}")) {
                hits += 1;
            }
        }
        assert!(
            hits > 1_000,
            "too few fast-path hits to prove anything: {hits}"
        );
    }
}
