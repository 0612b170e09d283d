//! NATS-style subjects and the patterns of subject allowlists.
//!
//! A subject is dot-separated tokens (`orders.eu.created`). A pattern may use `*` for
//! exactly one token and a final `>` for one or more tokens, as NATS does. Both the NATS
//! and the in-process messaging providers use these rules, so an allowlist means the same
//! thing on either.

/// Checks that `subject` is a valid subject to publish to: non-empty tokens of printable,
/// non-space characters, no wildcards.
pub fn validate_subject(subject: &str) -> Result<(), String> {
    validate(subject, false)
}

/// Checks that `pattern` is a valid subscription pattern (wildcards allowed).
pub fn validate_pattern(pattern: &str) -> Result<(), String> {
    validate(pattern, true)
}

fn validate(text: &str, wildcards: bool) -> Result<(), String> {
    if text.is_empty() {
        return Err("a subject cannot be empty".to_string());
    }
    if text.len() > 1024 {
        return Err(format!(
            "subject is {} bytes long; at most 1024",
            text.len()
        ));
    }
    let tokens: Vec<&str> = text.split('.').collect();
    for (i, token) in tokens.iter().enumerate() {
        if token.is_empty() {
            return Err(format!("subject {text:?} has an empty token"));
        }
        if token.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!(
                "subject {text:?} contains whitespace or a control character"
            ));
        }
        let wildcard = *token == "*" || *token == ">";
        if !wildcards && (token.contains('*') || token.contains('>')) {
            return Err(format!(
                "subject {text:?} contains a wildcard; publish to a concrete subject"
            ));
        }
        if wildcards && !wildcard && (token.contains('*') || token.contains('>')) {
            return Err(format!(
                "subject {text:?}: a wildcard must be a whole token"
            ));
        }
        if *token == ">" && i + 1 != tokens.len() {
            return Err(format!("subject {text:?}: `>` may only be the last token"));
        }
    }
    Ok(())
}

/// True if `subject` matches `pattern` (`*` one token, trailing `>` one or more).
pub fn matches(pattern: &str, subject: &str) -> bool {
    let mut p = pattern.split('.');
    let mut s = subject.split('.');
    loop {
        match (p.next(), s.next()) {
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// An allowlist of subject patterns; empty allows nothing (deny by default).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubjectAllowlist {
    patterns: Vec<String>,
}

impl SubjectAllowlist {
    /// Builds an allowlist, validating every pattern.
    pub fn new(patterns: Vec<String>) -> Result<Self, String> {
        for p in &patterns {
            validate_pattern(p)?;
        }
        Ok(SubjectAllowlist { patterns })
    }

    /// True if some pattern matches `subject`.
    pub fn allows(&self, subject: &str) -> bool {
        self.patterns.iter().any(|p| matches(p, subject))
    }

    /// The patterns.
    pub fn patterns(&self) -> &[String] {
        &self.patterns
    }

    /// True if nothing is allowed.
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_match_like_nats() {
        assert!(matches("a.b", "a.b"));
        assert!(!matches("a.b", "a.b.c"));
        assert!(matches("a.*", "a.b"));
        assert!(!matches("a.*", "a.b.c"));
        assert!(matches("a.>", "a.b.c"));
        assert!(!matches("a.>", "a"));
        assert!(matches("*.b.>", "x.b.y"));
        assert!(matches(">", "anything.at.all"));
    }

    #[test]
    fn validation() {
        assert!(validate_subject("a.b").is_ok());
        assert!(validate_subject("a.*").is_err());
        assert!(validate_subject("a..b").is_err());
        assert!(validate_subject("a b").is_err());
        assert!(validate_subject("").is_err());
        assert!(validate_pattern("a.>").is_ok());
        assert!(validate_pattern("a.>.b").is_err());
        assert!(validate_pattern("a.b*").is_err());
        let list = SubjectAllowlist::new(vec!["orders.>".into()]).unwrap();
        assert!(list.allows("orders.new"));
        assert!(!list.allows("payments.new"));
        assert!(!SubjectAllowlist::default().allows("x"));
    }
}
