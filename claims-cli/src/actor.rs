//! Actor claims: the `wascap` metadata object of an actor module, and signing a module.

use nkeys::KeyPair;
use serde::{Deserialize, Serialize};

use crate::caps::parse_capability;
use crate::error::{Error, Result};
use crate::jwt::{self, Claims, WASCAP_REVISION};
use crate::keys::{self, KeyKind};
use crate::wasm::ModuleSections;

/// The `wascap` object of an actor's claims, field for field as wascap 0.11–0.13 write it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ActorMetadata {
    /// A descriptive name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Upper-case hex SHA-256 of the module without its JWT sections.
    #[serde(default)]
    pub hash: String,
    /// Free-form tags.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
    /// Capability contract IDs the actor may use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caps: Option<Vec<String>>,
    /// Monotonic revision number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rev: Option<i32>,
    /// Human-friendly version string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ver: Option<String>,
    /// A code-friendly alias other actors may call this one by.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call_alias: Option<String>,
    /// True if the module is a capability provider rather than an actor.
    #[serde(default)]
    pub prov: bool,
}

/// What to sign into an actor module. Capabilities may be aliases (`keyvalue`) or IDs.
#[derive(Debug, Clone, Default)]
pub struct ActorSpec {
    /// The actor's descriptive name.
    pub name: String,
    /// Capabilities to grant (aliases expand; duplicates are dropped).
    pub caps: Vec<String>,
    /// Free-form tags.
    pub tags: Vec<String>,
    /// Revision number.
    pub rev: Option<i32>,
    /// Version string.
    pub ver: Option<String>,
    /// Call alias (normalized to lower case with `_` separators).
    pub call_alias: Option<String>,
    /// Not valid before this time (seconds since the Unix epoch).
    pub not_before: Option<u64>,
    /// Not valid after this time (seconds since the Unix epoch).
    pub expires: Option<u64>,
}

/// A freshly signed module.
#[derive(Debug, Clone)]
pub struct SignedModule {
    /// The module bytes with exactly one `wasmcloud_jwt` section.
    pub bytes: Vec<u8>,
    /// The embedded token.
    pub jwt: String,
    /// The claims that were signed.
    pub claims: Claims<ActorMetadata>,
}

/// Signs a module: computes its hash without JWT sections, builds claims from `spec`, signs
/// them with the `issuer` account key, and returns the module with exactly one JWT section
/// (any earlier ones are removed). `subject` is the module's public key (`M...`).
pub fn sign_module(
    module: &[u8],
    spec: &ActorSpec,
    issuer: &KeyPair,
    subject: &str,
) -> Result<SignedModule> {
    if keys::kind_of(issuer) != Some(KeyKind::Account) {
        return Err(Error::WrongKeyKind {
            role: "the issuer",
            expected: KeyKind::Account,
            found: format!("the key {}", issuer.public_key()),
        });
    }
    let subject = keys::parse_public_key(subject, KeyKind::Module, "the subject")?;
    if let (Some(nbf), Some(exp)) = (spec.not_before, spec.expires)
        && exp <= nbf
    {
        return Err(Error::malformed(
            "the expiry must come after the not-before time",
        ));
    }
    let mut caps: Vec<String> = Vec::with_capacity(spec.caps.len());
    for cap in &spec.caps {
        let id = parse_capability(cap)?;
        if !caps.contains(&id) {
            caps.push(id);
        }
    }
    let sections = ModuleSections::parse(module)?;
    let claims = Claims {
        expires: spec.expires,
        id: jwt::new_token_id(),
        issued_at: jwt::now_secs(),
        issuer: issuer.public_key(),
        subject,
        not_before: spec.not_before,
        metadata: Some(ActorMetadata {
            name: Some(spec.name.clone()),
            hash: sections.hash(),
            tags: Some(spec.tags.clone()),
            caps: Some(caps),
            rev: spec.rev,
            ver: spec.ver.clone(),
            call_alias: spec.call_alias.as_deref().map(normalize_call_alias),
            prov: false,
        }),
        wascap_revision: Some(WASCAP_REVISION),
    };
    let token = jwt::encode(&claims, issuer)?;
    Ok(SignedModule {
        bytes: sections.encode(Some(&token)),
        jwt: token,
        claims,
    })
}

/// Lower case, trimmed, ASCII only, with spaces, dashes and dots turned into underscores.
pub fn normalize_call_alias(alias: &str) -> String {
    alias
        .trim()
        .chars()
        .filter(char::is_ascii)
        .map(|c| match c {
            ' ' | '-' | '.' => '_',
            c => c.to_ascii_lowercase(),
        })
        .collect()
}
