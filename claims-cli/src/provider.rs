//! Provider claims: a signed token naming a capability provider's contract ID, vendor and
//! issuer, and the hashes of its binaries per target triple.
//!
//! The token layout is wascap's `CapabilityProvider`; the subject is the provider's service key
//! (`V...`). Unlike actor claims, these travel beside the provider (a file, or the plugin's
//! handshake), not inside a WebAssembly module.

use std::collections::BTreeMap;

use nkeys::KeyPair;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::caps::parse_capability;
use crate::error::{Error, Result};
use crate::jwt::{self, Claims, WASCAP_REVISION};
use crate::keys::{self, KeyKind};
use crate::verify::{Policy, strip_metadata};

/// The `wascap` object of a provider's claims, as wascap 0.11–0.13 write it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct ProviderMetadata {
    /// A descriptive name.
    #[serde(default)]
    pub name: Option<String>,
    /// The capability contract ID the provider serves.
    pub capid: String,
    /// Who makes the provider (e.g. `Redis`, `NATS`).
    #[serde(default)]
    pub vendor: String,
    /// Monotonic revision number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rev: Option<i32>,
    /// Human-friendly version string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ver: Option<String>,
    /// Upper-case hex SHA-256 of the provider binary, per target triple.
    #[serde(default)]
    pub target_hashes: BTreeMap<String, String>,
    /// Optional JSON schema of the provider's link configuration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_schema: Option<serde_json::Value>,
}

/// What to sign into a provider token.
#[derive(Debug, Clone, Default)]
pub struct ProviderSpec {
    /// Descriptive name.
    pub name: String,
    /// Contract ID or alias of the capability served.
    pub capid: String,
    /// Vendor.
    pub vendor: String,
    /// Revision number.
    pub rev: Option<i32>,
    /// Version string.
    pub ver: Option<String>,
    /// Binary hashes per target triple (see [`binary_hash`]).
    pub target_hashes: BTreeMap<String, String>,
    /// Optional JSON schema of the link configuration.
    pub config_schema: Option<serde_json::Value>,
    /// Not valid before (Unix seconds).
    pub not_before: Option<u64>,
    /// Not valid after (Unix seconds).
    pub expires: Option<u64>,
}

/// The hash recorded for a provider binary: upper-case hex SHA-256 of the file.
pub fn binary_hash(bytes: &[u8]) -> String {
    data_encoding::HEXUPPER.encode(&Sha256::digest(bytes))
}

/// Signs provider claims with the `issuer` account key for the provider key `subject` (`V...`).
pub fn issue_provider_token(
    spec: &ProviderSpec,
    issuer: &KeyPair,
    subject: &str,
) -> Result<String> {
    if keys::kind_of(issuer) != Some(KeyKind::Account) {
        return Err(Error::WrongKeyKind {
            role: "the issuer",
            expected: KeyKind::Account,
            found: format!("the key {}", issuer.public_key()),
        });
    }
    let subject = keys::parse_public_key(subject, KeyKind::Service, "the provider subject")?;
    let claims = Claims {
        expires: spec.expires,
        id: jwt::new_token_id(),
        issued_at: jwt::now_secs(),
        issuer: issuer.public_key(),
        subject,
        not_before: spec.not_before,
        metadata: Some(ProviderMetadata {
            name: Some(spec.name.clone()),
            capid: parse_capability(&spec.capid)?,
            vendor: spec.vendor.clone(),
            rev: spec.rev,
            ver: spec.ver.clone(),
            target_hashes: spec.target_hashes.clone(),
            config_schema: spec.config_schema.clone(),
        }),
        wascap_revision: Some(WASCAP_REVISION),
    };
    jwt::encode(&claims, issuer)
}

/// Provider claims that passed [`verify_provider_token`].
#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedProviderClaims {
    claims: Claims<()>,
    provider: ProviderMetadata,
    jwt: String,
}

impl VerifiedProviderClaims {
    /// The provider's public key (`V...`).
    pub fn subject(&self) -> &str {
        &self.claims.subject
    }

    /// The account that signed the token.
    pub fn issuer(&self) -> &str {
        &self.claims.issuer
    }

    /// The contract ID the provider serves.
    pub fn contract_id(&self) -> &str {
        &self.provider.capid
    }

    /// The vendor.
    pub fn vendor(&self) -> &str {
        &self.provider.vendor
    }

    /// The token id (`jti`).
    pub fn token_id(&self) -> &str {
        &self.claims.id
    }

    /// Expiry, seconds since the Unix epoch.
    pub fn expires(&self) -> Option<u64> {
        self.claims.expires
    }

    /// The whole `wascap` metadata object.
    pub fn metadata(&self) -> &ProviderMetadata {
        &self.provider
    }

    /// The token as signed.
    pub fn jwt(&self) -> &str {
        &self.jwt
    }

    /// Checks that `binary` is the provider binary signed for `target` (a target triple).
    pub fn check_binary(&self, target: &str, binary: &[u8]) -> Result<()> {
        let Some(expected) = self.provider.target_hashes.get(target) else {
            return Err(Error::NoHashForTarget {
                target: target.to_string(),
                known: self
                    .provider
                    .target_hashes
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        };
        let actual = binary_hash(binary);
        if !expected.eq_ignore_ascii_case(&actual) {
            return Err(Error::ProviderBinaryMismatch {
                target: target.to_string(),
                expected: expected.clone(),
                actual,
            });
        }
        Ok(())
    }
}

/// Verifies a provider token: shape, header, issuer account key, service-key subject,
/// signature, times, then the policy's issuers and revocations.
pub fn verify_provider_token(token: &str, policy: &Policy) -> Result<VerifiedProviderClaims> {
    verify_provider_token_at(token, policy, jwt::now_secs())
}

/// [`verify_provider_token`] as if the time were `now` (Unix seconds).
pub fn verify_provider_token_at(
    token: &str,
    policy: &Policy,
    now: u64,
) -> Result<VerifiedProviderClaims> {
    let auth = jwt::authenticate::<ProviderMetadata>(token, KeyKind::Service)?;
    if auth.metadata.capid.is_empty() {
        return Err(Error::malformed(
            "provider claims name no contract ID (`capid`)",
        ));
    }
    policy.check_token(&auth.claims, now)?;
    Ok(VerifiedProviderClaims {
        claims: strip_metadata(auth.claims),
        provider: auth.metadata,
        jwt: token.trim().to_string(),
    })
}
