//! Container, object and root names: what an actor may name, so that every path stays
//! inside its link's root.

use crate::ProviderError;

/// The object that marks a container as existing (hidden from listings, and not a name an
/// actor may use).
pub(crate) const MARKER: &str = ".sigil-container";

/// The longest container name, in bytes.
const MAX_CONTAINER: usize = 63;
/// The longest object name, in bytes.
const MAX_OBJECT: usize = 1024;
/// The longest link root, in bytes.
const MAX_ROOT: usize = 512;

fn denied(what: &str, name: &str, why: &str) -> ProviderError {
    ProviderError::Denied(format!("{what} {name:?} is not allowed: {why}"))
}

/// Checks a container name: 1 to 63 bytes of `a-z`, `0-9`, `.`, `_` and `-`, not `.` or
/// `..`.
pub(crate) fn check_container(name: &str) -> Result<(), ProviderError> {
    if name.is_empty() {
        return Err(denied("container name", name, "it is empty"));
    }
    if name.len() > MAX_CONTAINER {
        return Err(denied("container name", name, "it is longer than 63 bytes"));
    }
    if name == "." || name == ".." {
        return Err(denied(
            "container name",
            name,
            "path traversal (`.` and `..` are not names)",
        ));
    }
    if name.contains('/') || name.contains('\\') {
        return Err(denied(
            "container name",
            name,
            "path traversal (a container name has no `/` or `\\`)",
        ));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err(denied(
            "container name",
            name,
            "only lower-case letters, digits, `.`, `_` and `-` are allowed",
        ));
    }
    Ok(())
}

/// Checks a relative, `/`-separated path: no leading `/`, no empty, `.` or `..` segments,
/// no backslash or control characters.
fn check_path(what: &str, name: &str, max: usize) -> Result<(), ProviderError> {
    if name.is_empty() {
        return Err(denied(what, name, "it is empty"));
    }
    if name.len() > max {
        return Err(denied(
            what,
            name,
            &format!("it is longer than {max} bytes"),
        ));
    }
    if name.starts_with('/') {
        return Err(denied(
            what,
            name,
            "path traversal (an absolute path; names are relative)",
        ));
    }
    if name.contains('\\') {
        return Err(denied(
            what,
            name,
            "path traversal (`\\` is not allowed; separate segments with `/`)",
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(denied(what, name, "it contains control characters"));
    }
    for segment in name.split('/') {
        match segment {
            "" => {
                return Err(denied(
                    what,
                    name,
                    "it has an empty segment (`//` or a trailing `/`)",
                ));
            }
            "." | ".." => {
                return Err(denied(
                    what,
                    name,
                    "path traversal (`.` and `..` segments are not allowed)",
                ));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Checks an object name: 1 to 1024 bytes, a relative `/`-separated path of non-empty
/// segments other than `.` and `..`, without backslashes or control characters, and not
/// under the reserved name [`MARKER`].
pub(crate) fn check_object(name: &str) -> Result<(), ProviderError> {
    check_path("object name", name, MAX_OBJECT)?;
    if name == MARKER || name.starts_with(&format!("{MARKER}/")) {
        return Err(denied("object name", name, "the name is reserved"));
    }
    Ok(())
}

/// Checks a link root given in the link configuration (the same rules as object names).
pub(crate) fn check_root(root: &str) -> Result<(), ProviderError> {
    check_path("link root", root, MAX_ROOT)
        .map_err(|e| ProviderError::Config(format!("`root`: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn containers() {
        for ok in ["photos", "a", "a.b-c_d", "0", "..a", &"x".repeat(63)] {
            assert!(check_container(ok).is_ok(), "{ok:?}");
        }
        for bad in [
            "",
            ".",
            "..",
            "A",
            "a/b",
            "a\\b",
            "../x",
            "a b",
            "é",
            &"x".repeat(64),
        ] {
            let err = check_container(bad).unwrap_err();
            assert!(matches!(err, ProviderError::Denied(_)), "{bad:?}: {err}");
        }
    }

    #[test]
    fn objects() {
        for ok in ["a", "a/b", "2024/cat.jpg", "..a", "a..", "a b/ü", ".hidden"] {
            assert!(check_object(ok).is_ok(), "{ok:?}");
        }
        for bad in [
            "",
            ".",
            "..",
            "../x",
            "a/../../b",
            "a/./b",
            "/etc/passwd",
            "a//b",
            "a/",
            "a\\b",
            "..\\x",
            "a\nb",
            "a\0b",
            MARKER,
            ".sigil-container/x",
            &"x".repeat(1025),
        ] {
            let err = check_object(bad).unwrap_err();
            assert!(matches!(err, ProviderError::Denied(_)), "{bad:?}: {err}");
        }
        let err = check_object("a/../../b").unwrap_err().to_string();
        assert!(err.contains("path traversal"), "{err}");
    }

    #[test]
    fn roots() {
        assert!(check_root("tenants/a").is_ok());
        assert!(matches!(check_root("../x"), Err(ProviderError::Config(_))));
        assert!(check_root("/abs").is_err());
    }
}
