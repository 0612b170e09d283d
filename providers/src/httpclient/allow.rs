//! The egress allowlist of an HTTP client link: which hosts (and ports) an actor may reach.

use std::fmt;

use crate::ProviderError;

/// One allowlist entry.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Pattern {
    /// `*`: any host, any port.
    Any,
    /// `host` or `host:port`: exactly this host (any port when none is given).
    Host { host: String, port: Option<u16> },
    /// `*.example.com` or `*.example.com:port`: any subdomain of `example.com` (not the
    /// domain itself).
    Subdomains { suffix: String, port: Option<u16> },
}

/// A link's egress allowlist. Empty means every request is refused.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Allowlist {
    patterns: Vec<Pattern>,
    text: Vec<String>,
}

impl Allowlist {
    /// Parses the items of the link's `allow` key.
    pub(crate) fn parse(items: &[String]) -> Result<Self, ProviderError> {
        let mut list = Allowlist::default();
        for item in items {
            list.patterns.push(parse_entry(item)?);
            list.text.push(item.clone());
        }
        Ok(list)
    }

    /// True when `host` (as a URL gives it: lower case, IPv6 in brackets) on `port` is
    /// allowed.
    pub(crate) fn allows(&self, host: &str, port: u16) -> bool {
        let host = host.to_ascii_lowercase();
        self.patterns.iter().any(|pattern| match pattern {
            Pattern::Any => true,
            Pattern::Host { host: h, port: p } => *h == host && p.is_none_or(|p| p == port),
            Pattern::Subdomains { suffix, port: p } => {
                host.len() > suffix.len() + 1
                    && host.ends_with(suffix.as_str())
                    && host.as_bytes()[host.len() - suffix.len() - 1] == b'.'
                    && p.is_none_or(|p| p == port)
            }
        })
    }

    /// True when nothing is allowed.
    pub(crate) fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }
}

impl fmt::Display for Allowlist {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.text.is_empty() {
            f.write_str("nothing (the link has no `allow` key)")
        } else {
            f.write_str(&self.text.join(", "))
        }
    }
}

fn bad(entry: &str, why: &str) -> ProviderError {
    ProviderError::Config(format!(
        "`allow` entry {entry:?} {why}; write `host`, `host:port`, `*.example.com` or `*`"
    ))
}

fn parse_entry(entry: &str) -> Result<Pattern, ProviderError> {
    if entry == "*" {
        return Ok(Pattern::Any);
    }
    if entry.contains("://") || entry.contains('/') {
        return Err(bad(entry, "is not a host (no scheme or path)"));
    }
    let (host, port) = split_port(entry)?;
    let host = host.to_ascii_lowercase();
    if let Some(suffix) = host.strip_prefix("*.") {
        check_hostname(entry, suffix)?;
        return Ok(Pattern::Subdomains {
            suffix: suffix.to_string(),
            port,
        });
    }
    if host.starts_with('[') {
        // An IPv6 literal, kept in brackets as URLs write it.
        let inner = host.strip_prefix('[').and_then(|h| h.strip_suffix(']'));
        if inner.is_none_or(|inner| inner.parse::<std::net::Ipv6Addr>().is_err()) {
            return Err(bad(entry, "is not a valid IPv6 address in brackets"));
        }
        return Ok(Pattern::Host { host, port });
    }
    check_hostname(entry, &host)?;
    Ok(Pattern::Host { host, port })
}

/// Splits `host:port` (or `[v6]:port`) into its parts.
fn split_port(entry: &str) -> Result<(&str, Option<u16>), ProviderError> {
    let split = if entry.starts_with('[') {
        entry.find(']').and_then(|end| {
            let rest = &entry[end + 1..];
            rest.strip_prefix(':').map(|port| (&entry[..=end], port))
        })
    } else {
        entry.rsplit_once(':')
    };
    match split {
        None => Ok((entry, None)),
        Some((host, port)) => match port.parse::<u16>() {
            Ok(port) if port > 0 => Ok((host, Some(port))),
            _ => Err(bad(entry, "has an invalid port")),
        },
    }
}

fn check_hostname(entry: &str, host: &str) -> Result<(), ProviderError> {
    let ok = !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    if ok {
        Ok(())
    } else {
        Err(bad(
            entry,
            "is not a valid host name (ASCII letters, digits, `-`, `.`)",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(items: &[&str]) -> Allowlist {
        Allowlist::parse(&items.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn hosts_ports_and_subdomains() {
        let l = list(&[
            "api.example.com",
            "127.0.0.1:8080",
            "*.svc.local",
            "[::1]:9",
        ]);
        assert!(l.allows("api.example.com", 443));
        assert!(l.allows("API.example.com", 80));
        assert!(!l.allows("example.com", 443));
        assert!(!l.allows("evilapi.example.com", 443));
        assert!(l.allows("127.0.0.1", 8080));
        assert!(!l.allows("127.0.0.1", 8081));
        assert!(l.allows("a.svc.local", 1));
        assert!(l.allows("a.b.svc.local", 1));
        assert!(!l.allows("svc.local", 1));
        assert!(!l.allows("xsvc.local", 1));
        assert!(l.allows("[::1]", 9));
        assert!(!l.allows("[::1]", 10));
    }

    #[test]
    fn empty_allows_nothing_and_star_allows_all() {
        let empty = list(&[]);
        assert!(empty.is_empty());
        assert!(!empty.allows("localhost", 80));
        assert!(list(&["*"]).allows("anything.example", 1));
    }

    #[test]
    fn bad_entries_are_refused() {
        for entry in [
            "http://x.com",
            "x.com/path",
            "x.com:0",
            "x.com:99999",
            "",
            "a..b",
            "[::1",
            "*.",
            "x y",
        ] {
            let err = Allowlist::parse(&[entry.to_string()]);
            assert!(err.is_err(), "{entry:?} was accepted");
        }
    }
}
