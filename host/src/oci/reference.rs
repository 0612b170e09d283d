//! `oci://` module references.

use std::fmt;
use std::str::FromStr;

use oci_client::Reference;

use super::RegistryError;

/// The scheme that marks a module reference wherever a module can also be a file or a name.
pub const SCHEME: &str = "oci://";

/// A module in a registry: `oci://REGISTRY/REPOSITORY[:TAG][@sha256:DIGEST]`.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ModuleRef {
    inner: Reference,
    /// Whether the text named a tag. The parser reads `REGISTRY/REPOSITORY` as the tag
    /// `latest` (what the registry is asked for); the reference is still shown, pinned
    /// and refused as written, with no tag.
    tag_written: bool,
}

impl fmt::Debug for ModuleRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

impl fmt::Display for ModuleRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{SCHEME}{}/{}", self.registry(), self.repository())?;
        if let Some(tag) = self.tag() {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = self.inner.digest() {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

impl ModuleRef {
    /// Whether `s` is written as a registry reference (starts with `oci://`).
    pub fn is_reference(s: &str) -> bool {
        s.starts_with(SCHEME)
    }

    /// Parses a reference, with or without the `oci://` scheme. A reference must name its
    /// registry (`localhost:5000/echo:1`, `ghcr.io/org/echo:1`): Sigil does not guess
    /// Docker Hub for a bare `echo:1`.
    pub fn parse(s: &str) -> Result<Self, RegistryError> {
        let text = s.trim();
        let bare = text.strip_prefix(SCHEME).unwrap_or(text);
        let bad = |reason: String| RegistryError::Reference {
            reference: s.to_string(),
            reason,
        };
        if bare.is_empty() {
            return Err(bad("it is empty".into()));
        }
        let first = bare.split('/').next().unwrap_or_default();
        let names_registry = bare.contains('/')
            && (first.contains('.') || first.contains(':') || first == "localhost");
        if !names_registry {
            return Err(bad(format!(
                "it names no registry; write it as oci://REGISTRY/REPOSITORY:TAG, e.g. \
                 oci://localhost:5000/{bare} or oci://ghcr.io/ORG/{bare}"
            )));
        }
        let inner = Reference::from_str(bare).map_err(|e| bad(e.to_string()))?;
        if let Some(d) = inner.digest() {
            let ok = d
                .strip_prefix("sha256:")
                .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()));
            if !ok {
                return Err(bad(format!(
                    "its digest {d} is not sha256: followed by 64 hexadecimal digits"
                )));
            }
        }
        let name = bare.rsplit('/').next().unwrap_or_default();
        let tag_written = name.split('@').next().unwrap_or_default().contains(':');
        Ok(ModuleRef { inner, tag_written })
    }

    /// The registry's host (and port).
    pub fn registry(&self) -> &str {
        self.inner.registry()
    }

    /// The repository within the registry.
    pub fn repository(&self) -> &str {
        self.inner.repository()
    }

    /// The tag, when the reference names one.
    pub fn tag(&self) -> Option<&str> {
        self.inner.tag().filter(|_| self.tag_written)
    }

    /// The manifest digest (`sha256:...`), when the reference pins one.
    pub fn digest(&self) -> Option<&str> {
        self.inner.digest()
    }

    /// Whether the tag is `latest` or missing (and no digest pins the module): what such a
    /// reference runs changes whenever someone pushes.
    pub fn floats(&self) -> bool {
        self.digest().is_none() && self.tag().is_none_or(|t| t == "latest")
    }

    /// The same repository pinned to `digest` (the tag kept for reading).
    pub fn pinned(&self, digest: &str) -> ModuleRef {
        let inner = match self.tag() {
            Some(tag) => Reference::with_tag_and_digest(
                self.registry().to_string(),
                self.repository().to_string(),
                tag.to_string(),
                digest.to_string(),
            ),
            None => Reference::with_digest(
                self.registry().to_string(),
                self.repository().to_string(),
                digest.to_string(),
            ),
        };
        ModuleRef {
            tag_written: self.tag_written,
            inner,
        }
    }

    /// The reference in the form the registry client takes.
    pub(crate) fn oci(&self) -> &Reference {
        &self.inner
    }

    /// For the on-disk index of tags: registry, repository and tag as path parts (a
    /// reference with no tag is the tag the registry resolves it as, `latest`).
    pub(crate) fn tag_key(&self) -> Option<String> {
        let tag = self.inner.tag()?;
        Some(format!(
            "{}/{}/{tag}",
            self.registry().replace(':', "_"),
            self.repository()
        ))
    }
}

impl FromStr for ModuleRef {
    type Err = RegistryError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ModuleRef::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        let r = ModuleRef::parse("oci://localhost:5000/sigil/echo:1.0").unwrap();
        assert_eq!(r.registry(), "localhost:5000");
        assert_eq!(r.repository(), "sigil/echo");
        assert_eq!(r.tag(), Some("1.0"));
        assert!(!r.floats());
        assert_eq!(r.to_string(), "oci://localhost:5000/sigil/echo:1.0");
        let d = format!("sha256:{}", "a".repeat(64));
        let p = r.pinned(&d);
        assert_eq!(
            p.to_string(),
            format!("oci://localhost:5000/sigil/echo:1.0@{d}")
        );
        let bare = ModuleRef::parse("oci://ghcr.io/o/echo").unwrap();
        assert!(bare.floats());
        assert_eq!(bare.tag(), None);
        assert_eq!(bare.to_string(), "oci://ghcr.io/o/echo");
        assert_eq!(
            bare.pinned(&d).to_string(),
            format!("oci://ghcr.io/o/echo@{d}")
        );
        assert_eq!(bare.tag_key().as_deref(), Some("ghcr.io/o/echo/latest"));
        let ported = ModuleRef::parse("localhost:5000/o/echo").unwrap();
        assert_eq!(ported.tag(), None);
        assert_eq!(ported.to_string(), "oci://localhost:5000/o/echo");
        assert!(ModuleRef::parse("ghcr.io/o/echo").unwrap().floats());
        assert!(ModuleRef::parse("ghcr.io/o/echo:latest").unwrap().floats());
        assert!(
            !ModuleRef::parse(&format!("ghcr.io/o/echo@{d}"))
                .unwrap()
                .floats()
        );
    }

    #[test]
    fn refuses_what_it_cannot_resolve() {
        for (text, says) in [
            ("oci://", "empty"),
            ("oci://echo:1", "names no registry"),
            ("oci://org/echo:1", "names no registry"),
            ("oci://localhost:5000/Echo:1", "localhost:5000/Echo:1"),
            (
                "oci://localhost:5000/echo@sha256:12",
                "not a module reference",
            ),
        ] {
            let e = ModuleRef::parse(text).unwrap_err().to_string();
            assert!(e.contains(says), "{text}: {e}");
            assert!(e.contains(text.trim_start_matches("oci://")), "{text}: {e}");
        }
    }
}
