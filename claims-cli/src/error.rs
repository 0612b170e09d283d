//! The one error type of this crate.
//!
//! Every failure has its own variant, so a caller can match on exactly what went wrong and a
//! person reading the message knows what to do next. Verification failures (the module or
//! token is not acceptable) are told apart from usage and I/O problems by
//! [`Error::is_verification_failure`], which the CLI maps to its exit code.

use std::path::PathBuf;

use crate::keys::KeyKind;

/// Why a subject or token id was refused by a revocation list.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Revocation {
    /// The module (or provider) public key is revoked: every token for it is refused.
    Subject(String),
    /// This one token (its `jti`) is revoked.
    TokenId(String),
}

impl std::fmt::Display for Revocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Revocation::Subject(key) => write!(f, "subject {key} is revoked"),
            Revocation::TokenId(id) => write!(f, "token id (jti) {id} is revoked"),
        }
    }
}

/// Everything that can go wrong while signing, extracting or verifying claims, or handling keys.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The bytes do not start with the WebAssembly magic number.
    #[error("not a WebAssembly module: the file does not start with the `\\0asm` magic number")]
    NotWasm,

    /// The module ends in the middle of a section or header.
    #[error(
        "truncated WebAssembly module: it ends at byte {len} but a section needs more bytes \
         (the file was cut short; fetch or copy it again)"
    )]
    Truncated {
        /// Length of the input in bytes.
        len: usize,
    },

    /// The module's binary structure is invalid.
    #[error("malformed WebAssembly module at byte offset {offset}: {message}")]
    MalformedWasm {
        /// Byte offset of the problem.
        offset: usize,
        /// What the parser found wrong.
        message: String,
    },

    /// The input is a WebAssembly component, not a core module.
    #[error(
        "this is a WebAssembly component; Sigil actors are core modules speaking waPC \
         (build for wasm32-unknown-unknown)"
    )]
    Component,

    /// The module carries no `jwt` or `wasmcloud_jwt` custom section.
    #[error(
        "module is not signed: it has no `wasmcloud_jwt` (or legacy `jwt`) custom section; \
         sign it with `sigil-claims sign`"
    )]
    NoJwtSection,

    /// The module carries more than one JWT section, so which one applies is ambiguous.
    #[error(
        "module carries {count} JWT sections; exactly one is allowed (re-sign it with \
         `sigil-claims sign`, which replaces old sections)"
    )]
    MultipleJwtSections {
        /// How many `jwt` / `wasmcloud_jwt` sections were found.
        count: usize,
    },

    /// The token is not a well-formed `header.claims.signature` JWT of the expected layout.
    #[error("malformed JWT: {reason}")]
    MalformedJwt {
        /// What is wrong with it.
        reason: String,
    },

    /// The JWT header names an algorithm other than `Ed25519`.
    #[error("unsupported JWT algorithm {alg:?}: Sigil tokens are signed with `Ed25519` nkeys")]
    UnsupportedAlgorithm {
        /// The `alg` value found in the header.
        alg: String,
    },

    /// The issuer (`iss`) is not an account public key.
    #[error("issuer {issuer:?} is not an account public key (an `A...` nkey)")]
    IssuerNotAccount {
        /// The `iss` value found.
        issuer: String,
    },

    /// The subject (`sub`) is not a public key of the kind this token is for.
    #[error("subject {subject:?} is not a {} public key (a `{}...` nkey)", expected.name(), expected.prefix())]
    SubjectWrongKind {
        /// The `sub` value found.
        subject: String,
        /// The kind of key the subject must be.
        expected: KeyKind,
    },

    /// The Ed25519 signature does not match the token under the issuer's key.
    #[error(
        "bad signature: the token was not signed by its issuer {issuer} (forged or altered claims)"
    )]
    BadSignature {
        /// The issuer whose key the signature was checked against.
        issuer: String,
    },

    /// The module's hash does not match the hash in its signed claims.
    #[error(
        "module hash mismatch: the claims were signed for {expected} but the module hashes to \
         {actual}; the module was altered after signing"
    )]
    HashMismatch {
        /// The hash recorded in the signed claims.
        expected: String,
        /// The hash of the module as it is now.
        actual: String,
    },

    /// A pre-revision-3 token whose hash does not match (its hash rule cannot be checked).
    #[error(
        "legacy token (wascap revision {revision}) whose module hash cannot be checked; \
         re-sign the module, or allow legacy hashes in the policy"
    )]
    LegacyHashUnverifiable {
        /// The `wascap_revision` of the token (0 when absent).
        revision: u32,
    },

    /// The token's `exp` is in the past.
    #[error("token expired at {} (now {})", fmt_time(*.expired_at), fmt_time(*.now))]
    Expired {
        /// The token's `exp`, in seconds since the Unix epoch.
        expired_at: u64,
        /// The verifier's clock, in seconds since the Unix epoch.
        now: u64,
    },

    /// The token's `nbf` is in the future.
    #[error("token is not valid before {} (now {})", fmt_time(*.not_before), fmt_time(*.now))]
    NotYetValid {
        /// The token's `nbf`, in seconds since the Unix epoch.
        not_before: u64,
        /// The verifier's clock, in seconds since the Unix epoch.
        now: u64,
    },

    /// The issuer is not in the policy's allowed issuers.
    #[error("issuer {issuer} is not among the allowed issuers of this policy")]
    IssuerNotAllowed {
        /// The issuer that was refused.
        issuer: String,
    },

    /// The subject or token id is revoked by the policy.
    #[error("revoked: {0}")]
    Revoked(Revocation),

    /// The policy requires a capability that the claims do not grant.
    #[error("claims lack the capability {capability} that the policy requires")]
    MissingRequiredCapability {
        /// The required capability's contract ID.
        capability: String,
    },

    /// The claims ask for a capability that the policy does not allow.
    #[error("claims ask for the capability {capability}, which the policy does not allow")]
    CapabilityNotAllowed {
        /// The refused capability's contract ID.
        capability: String,
    },

    /// A capability string is neither a contract ID nor a known alias.
    #[error("invalid capability {value:?}: {reason}")]
    InvalidCapability {
        /// The value given.
        value: String,
        /// Why it was refused.
        reason: String,
    },

    /// Provider claims hold no hash for the requested target triple.
    #[error("provider claims hold no binary hash for target {target:?} (signed targets: {known})")]
    NoHashForTarget {
        /// The target triple asked for.
        target: String,
        /// The targets the claims do list.
        known: String,
    },

    /// A provider binary does not match the hash in its claims.
    #[error(
        "provider binary for {target} hashes to {actual} but its claims say {expected}; \
         the binary was altered after signing"
    )]
    ProviderBinaryMismatch {
        /// The target triple.
        target: String,
        /// The hash in the signed claims.
        expected: String,
        /// The hash of the binary as it is now.
        actual: String,
    },

    /// A key string or seed could not be decoded.
    #[error("invalid key: {reason}")]
    InvalidKey {
        /// What is wrong with it.
        reason: String,
    },

    /// A key is of the wrong kind for its role.
    #[error("{role} must be a {} key (`{}...`), but {found} was given", expected.name(), expected.prefix())]
    WrongKeyKind {
        /// What the key is used for (e.g. "the issuer").
        role: &'static str,
        /// The kind expected.
        expected: KeyKind,
        /// A description of what was found (a public key, never a seed).
        found: String,
    },

    /// A seed file is readable by other users.
    #[error(
        "seed file {} is readable by other users (mode {mode:o}); run `chmod 600 {}`",
        path.display(),
        path.display()
    )]
    InsecureSeedFile {
        /// The seed file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },

    /// An environment variable that should hold a seed is unset or not Unicode.
    #[error("environment variable {var} is not set (it should hold an nkeys seed)")]
    MissingSeedVariable {
        /// The variable's name.
        var: String,
    },

    /// A key with this name and kind exists already.
    #[error("key file {} exists already; pick another --name or remove it", path.display())]
    KeyExists {
        /// The existing file.
        path: PathBuf,
    },

    /// A named key does not exist in the key directory.
    #[error("no {kind} key named {name:?} in {} (create it with `sigil-claims keys gen {kind} --name {name}`)", dir.display())]
    KeyNotFound {
        /// The key's kind.
        kind: KeyKind,
        /// The key's name.
        name: String,
        /// The key directory searched.
        dir: PathBuf,
    },

    /// The key directory cannot be determined.
    #[error("no key directory: set SIGIL_KEYS or HOME")]
    NoKeyDirectory,

    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// True when the input was read fine but is not acceptable (bad, tampered, expired,
    /// refused by policy), as opposed to a usage, key or I/O problem.
    pub fn is_verification_failure(&self) -> bool {
        !matches!(
            self,
            Error::InvalidCapability { .. }
                | Error::InvalidKey { .. }
                | Error::WrongKeyKind { .. }
                | Error::InsecureSeedFile { .. }
                | Error::MissingSeedVariable { .. }
                | Error::KeyExists { .. }
                | Error::KeyNotFound { .. }
                | Error::NoKeyDirectory
                | Error::Io { .. }
        )
    }

    pub(crate) fn malformed(reason: impl Into<String>) -> Self {
        Error::MalformedJwt {
            reason: reason.into(),
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

/// A Unix timestamp as RFC 3339 UTC, or the raw number if it is out of range.
pub(crate) fn fmt_time(secs: u64) -> String {
    std::time::UNIX_EPOCH
        .checked_add(std::time::Duration::from_secs(secs))
        .filter(|t| secs < 253_402_300_800 && *t >= std::time::UNIX_EPOCH) // year 10000
        .map(|t| humantime::format_rfc3339_seconds(t).to_string())
        .unwrap_or_else(|| format!("{secs} (seconds since 1970)"))
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
