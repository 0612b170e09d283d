//! Well-known capability contract IDs and the short aliases the CLI accepts for them.
//!
//! The IDs are wasmCloud's, so a module signed elsewhere means here what it says there.

use crate::error::{Error, Result};

/// Inbound HTTP: the actor handles HTTP requests.
pub const HTTP_SERVER: &str = "wasmcloud:httpserver";
/// Outbound HTTP through an egress allowlist.
pub const HTTP_CLIENT: &str = "wasmcloud:httpclient";
/// Key-value storage.
pub const KEY_VALUE: &str = "wasmcloud:keyvalue";
/// Publish/subscribe and request/reply messaging.
pub const MESSAGING: &str = "wasmcloud:messaging";
/// Blob (object) storage.
pub const BLOB_STORE: &str = "wasmcloud:blobstore";
/// Logging through the host (built in).
pub const LOGGING: &str = "wasmcloud:builtin:logging";
/// Random numbers and UUIDs from the host (built in).
pub const NUMBERGEN: &str = "wasmcloud:builtin:numbergen";
/// Calls to other actors, on this host or across the lattice (Sigil's own contract).
pub const ACTOR: &str = "sigil:actor";

/// `(alias, contract ID, human name)` for every well-known capability.
pub const WELL_KNOWN: &[(&str, &str, &str)] = &[
    ("httpserver", HTTP_SERVER, "HTTP server"),
    ("httpclient", HTTP_CLIENT, "HTTP client"),
    ("keyvalue", KEY_VALUE, "Key-value store"),
    ("messaging", MESSAGING, "Messaging"),
    ("blobstore", BLOB_STORE, "Blob store"),
    ("logging", LOGGING, "Logging"),
    ("numbergen", NUMBERGEN, "Number generation"),
    ("actor", ACTOR, "Calls to other actors"),
];

/// Turns a capability as a person writes it into a contract ID: a short alias
/// (`keyvalue`, `kv`, `http-server`, ...) expands to its well-known ID; a string with a colon
/// is taken as a contract ID (custom contracts are allowed) after a syntax check.
pub fn parse_capability(value: &str) -> Result<String> {
    let v = value.trim();
    if v.contains(':') {
        let valid = v
            .split(':')
            .all(|part| !part.is_empty() && part.chars().all(is_id_char));
        return if valid {
            Ok(v.to_string())
        } else {
            Err(Error::InvalidCapability {
                value: value.to_string(),
                reason: "a contract ID is colon-separated non-empty parts of letters, digits, \
                         '-', '_' or '.', like `wasmcloud:keyvalue`"
                    .into(),
            })
        };
    }
    let normalized: String = v
        .chars()
        .filter(|c| !matches!(c, '-' | '_'))
        .collect::<String>()
        .to_ascii_lowercase();
    let alias = match normalized.as_str() {
        "kv" => "keyvalue",
        "blob" | "blobs" | "s3" => "blobstore",
        "msg" | "nats" => "messaging",
        "http" => "httpserver",
        "log" => "logging",
        "random" | "rng" => "numbergen",
        "actors" | "actorcall" | "call" => "actor",
        other => other,
    };
    WELL_KNOWN
        .iter()
        .find(|(a, _, _)| *a == alias)
        .map(|(_, id, _)| id.to_string())
        .ok_or_else(|| Error::InvalidCapability {
            value: value.to_string(),
            reason: format!(
                "not a known alias ({}) and not a contract ID (which contains a colon)",
                WELL_KNOWN
                    .iter()
                    .map(|(a, _, _)| *a)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        })
}

fn is_id_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')
}

/// The human name of a well-known contract ID.
pub fn describe(contract_id: &str) -> Option<&'static str> {
    WELL_KNOWN
        .iter()
        .find(|(_, id, _)| *id == contract_id)
        .map(|(_, _, name)| *name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliases_expand() {
        assert_eq!(parse_capability("keyvalue").unwrap(), KEY_VALUE);
        assert_eq!(parse_capability("KV").unwrap(), KEY_VALUE);
        assert_eq!(parse_capability("http-server").unwrap(), HTTP_SERVER);
        assert_eq!(parse_capability("http_client").unwrap(), HTTP_CLIENT);
        assert_eq!(parse_capability("logging").unwrap(), LOGGING);
        assert_eq!(parse_capability("acme:ledger").unwrap(), "acme:ledger");
        assert!(parse_capability("nope").is_err());
        assert!(parse_capability("a::b").is_err());
        assert!(parse_capability("a:b c").is_err());
    }
}
