//! Verification of an actor module against a [`Policy`], returning proof: [`VerifiedClaims`].
//!
//! The checks run in a fixed order, so the error names the most basic problem first:
//! 1. the bytes are a core WebAssembly module (magic, version, section structure);
//! 2. it carries exactly one JWT section (`wasmcloud_jwt` or legacy `jwt`);
//! 3. the token's shape, header (`alg: Ed25519`) and claims JSON;
//! 4. the issuer is an account key and the subject a module key;
//! 5. the issuer's Ed25519 signature (strict verification);
//! 6. the module hash in the claims equals the hash of the module as it is now;
//! 7. `exp` and `nbf`, with the policy's clock-skew tolerance;
//! 8. the policy: allowed issuers, revocations, required and allowed capabilities.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::actor::ActorMetadata;
use crate::error::{Error, Result, Revocation};
use crate::jwt::{self, Claims, WASCAP_REVISION};
use crate::keys::KeyKind;
use crate::wasm::{JwtSection, ModuleSections};

/// What a host accepts, applied at load time. The default accepts any issuer (development);
/// production hosts name their issuers with [`Policy::allow_issuer`].
#[derive(Debug, Clone)]
pub struct Policy {
    allowed_issuers: Option<BTreeSet<String>>,
    revoked_subjects: BTreeSet<String>,
    revoked_token_ids: BTreeSet<String>,
    required_caps: BTreeSet<String>,
    allowed_caps: Option<BTreeSet<String>>,
    clock_skew: Duration,
    allow_legacy_hash: bool,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            allowed_issuers: None,
            revoked_subjects: BTreeSet::new(),
            revoked_token_ids: BTreeSet::new(),
            required_caps: BTreeSet::new(),
            allowed_caps: None,
            clock_skew: Policy::DEFAULT_CLOCK_SKEW,
            allow_legacy_hash: false,
        }
    }
}

impl Policy {
    /// Tolerance for clocks that disagree, applied to `exp` and `nbf`.
    pub const DEFAULT_CLOCK_SKEW: Duration = Duration::from_secs(60);

    /// A policy that accepts any issuer, revokes nothing and requires nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Accepts tokens from this issuer; once any issuer is named, only named issuers pass.
    pub fn allow_issuer(mut self, account: impl Into<String>) -> Self {
        self.allowed_issuers
            .get_or_insert_with(BTreeSet::new)
            .insert(account.into());
        self
    }

    /// Refuses every token whose subject is this module or provider key.
    pub fn revoke_subject(mut self, key: impl Into<String>) -> Self {
        self.revoked_subjects.insert(key.into());
        self
    }

    /// Refuses the token with this id (`jti`).
    pub fn revoke_token_id(mut self, jti: impl Into<String>) -> Self {
        self.revoked_token_ids.insert(jti.into());
        self
    }

    /// Refuses modules whose claims do not grant this capability.
    pub fn require_capability(mut self, contract_id: impl Into<String>) -> Self {
        self.required_caps.insert(contract_id.into());
        self
    }

    /// Refuses modules that claim a capability outside this set (call once per capability).
    pub fn allow_capability(mut self, contract_id: impl Into<String>) -> Self {
        self.allowed_caps
            .get_or_insert_with(BTreeSet::new)
            .insert(contract_id.into());
        self
    }

    /// Sets the clock-skew tolerance for `exp` and `nbf`.
    pub fn clock_skew(mut self, skew: Duration) -> Self {
        self.clock_skew = skew;
        self
    }

    /// Accepts pre-revision-3 tokens whose module hash cannot be checked. Off by default:
    /// such a module could have been altered after signing.
    pub fn allow_legacy_hash(mut self, allow: bool) -> Self {
        self.allow_legacy_hash = allow;
        self
    }

    /// The allowed issuers, or `None` if any issuer is accepted.
    pub fn allowed_issuers(&self) -> Option<&BTreeSet<String>> {
        self.allowed_issuers.as_ref()
    }

    /// Checks times, issuer and revocations of authenticated claims.
    pub(crate) fn check_token<T>(&self, claims: &Claims<T>, now: u64) -> Result<()> {
        let skew = self.clock_skew.as_secs();
        if let Some(exp) = claims.expires
            && now >= exp.saturating_add(skew)
        {
            return Err(Error::Expired {
                expired_at: exp,
                now,
            });
        }
        if let Some(nbf) = claims.not_before
            && now.saturating_add(skew) < nbf
        {
            return Err(Error::NotYetValid {
                not_before: nbf,
                now,
            });
        }
        if let Some(allowed) = &self.allowed_issuers
            && !allowed.contains(&claims.issuer)
        {
            return Err(Error::IssuerNotAllowed {
                issuer: claims.issuer.clone(),
            });
        }
        if self.revoked_subjects.contains(&claims.subject) {
            return Err(Error::Revoked(Revocation::Subject(claims.subject.clone())));
        }
        if self.revoked_token_ids.contains(&claims.id) {
            return Err(Error::Revoked(Revocation::TokenId(claims.id.clone())));
        }
        Ok(())
    }

    fn check_caps(&self, caps: &[String]) -> Result<()> {
        if let Some(missing) = self.required_caps.iter().find(|c| !caps.contains(c)) {
            return Err(Error::MissingRequiredCapability {
                capability: missing.clone(),
            });
        }
        if let Some(allowed) = &self.allowed_caps
            && let Some(extra) = caps.iter().find(|c| !allowed.contains(*c))
        {
            return Err(Error::CapabilityNotAllowed {
                capability: extra.clone(),
            });
        }
        Ok(())
    }
}

/// Claims that passed [`verify`]: the only way to get one is to verify a module, so code that
/// takes a `VerifiedClaims` cannot be handed an unverified module's claims.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedClaims {
    claims: Claims<()>,
    actor: ActorMetadata,
    jwt: String,
}

impl VerifiedClaims {
    /// The module's public key (`sub`, `M...`): the actor's identity.
    pub fn subject(&self) -> &str {
        &self.claims.subject
    }

    /// The account that signed the module (`iss`, `A...`).
    pub fn issuer(&self) -> &str {
        &self.claims.issuer
    }

    /// The actor's name, if it has one.
    pub fn name(&self) -> Option<&str> {
        self.actor.name.as_deref()
    }

    /// The capability contract IDs granted to the actor.
    pub fn capabilities(&self) -> &[String] {
        self.actor.caps.as_deref().unwrap_or(&[])
    }

    /// True if the claims grant this capability contract ID.
    pub fn has_capability(&self, contract_id: &str) -> bool {
        self.capabilities().iter().any(|c| c == contract_id)
    }

    /// The tags.
    pub fn tags(&self) -> &[String] {
        self.actor.tags.as_deref().unwrap_or(&[])
    }

    /// The revision number.
    pub fn rev(&self) -> Option<i32> {
        self.actor.rev
    }

    /// The version string.
    pub fn ver(&self) -> Option<&str> {
        self.actor.ver.as_deref()
    }

    /// The call alias.
    pub fn call_alias(&self) -> Option<&str> {
        self.actor.call_alias.as_deref()
    }

    /// The signed module hash (upper-case hex SHA-256 without JWT sections).
    pub fn module_hash(&self) -> &str {
        &self.actor.hash
    }

    /// The token id (`jti`).
    pub fn token_id(&self) -> &str {
        &self.claims.id
    }

    /// Issue time, seconds since the Unix epoch.
    pub fn issued_at(&self) -> u64 {
        self.claims.issued_at
    }

    /// Expiry, seconds since the Unix epoch.
    pub fn expires(&self) -> Option<u64> {
        self.claims.expires
    }

    /// Not-before time, seconds since the Unix epoch.
    pub fn not_before(&self) -> Option<u64> {
        self.claims.not_before
    }

    /// The whole `wascap` metadata object.
    pub fn metadata(&self) -> &ActorMetadata {
        &self.actor
    }

    /// The embedded token, as signed.
    pub fn jwt(&self) -> &str {
        &self.jwt
    }
}

/// Verifies a signed module against a policy, at the current time.
///
/// ```
/// # fn main() -> Result<(), sigil_claims::Error> {
/// use sigil_claims::{ActorSpec, KeyKind, Policy, keys, sign_module, verify};
///
/// let module = b"\0asm\x01\0\0\0"; // the smallest valid module
/// let account = keys::generate(KeyKind::Account);
/// let subject = keys::generate(KeyKind::Module).public_key();
/// let spec = ActorSpec { name: "tiny".into(), caps: vec!["logging".into()], ..Default::default() };
/// let signed = sign_module(module, &spec, &account, &subject)?;
///
/// let claims = verify(&signed.bytes, &Policy::new().allow_issuer(account.public_key()))?;
/// assert!(claims.has_capability("wasmcloud:builtin:logging"));
/// # Ok(()) }
/// ```
pub fn verify(module: &[u8], policy: &Policy) -> Result<VerifiedClaims> {
    verify_at(module, policy, jwt::now_secs())
}

/// Verifies a signed module against a policy, as if the time were `now` (Unix seconds).
pub fn verify_at(module: &[u8], policy: &Policy, now: u64) -> Result<VerifiedClaims> {
    let sections = ModuleSections::parse(module)?;
    let section = single_jwt_section(&sections)?;
    let token = std::str::from_utf8(section.data)
        .map_err(|_| Error::malformed("the JWT section is not UTF-8 text"))?;
    let auth = jwt::authenticate::<ActorMetadata>(token, KeyKind::Module)?;

    let actual = sections.hash();
    if auth.metadata.hash != actual {
        let revision = auth.claims.wascap_revision.unwrap_or(0);
        if revision >= WASCAP_REVISION {
            return Err(Error::HashMismatch {
                expected: auth.metadata.hash,
                actual,
            });
        }
        if !policy.allow_legacy_hash {
            return Err(Error::LegacyHashUnverifiable { revision });
        }
    }
    policy.check_token(&auth.claims, now)?;
    let caps = auth.metadata.caps.as_deref().unwrap_or(&[]);
    policy.check_caps(caps)?;
    Ok(VerifiedClaims {
        claims: strip_metadata(auth.claims),
        actor: auth.metadata,
        jwt: token
            .trim_matches(|c: char| c.is_ascii_whitespace() || c == '\0')
            .to_string(),
    })
}

pub(crate) fn strip_metadata<T>(c: Claims<T>) -> Claims<()> {
    Claims {
        expires: c.expires,
        id: c.id,
        issued_at: c.issued_at,
        issuer: c.issuer,
        subject: c.subject,
        not_before: c.not_before,
        metadata: None,
        wascap_revision: c.wascap_revision,
    }
}

fn single_jwt_section<'s, 'a>(sections: &'s ModuleSections<'a>) -> Result<&'s JwtSection<'a>> {
    match sections.jwt_sections() {
        [] => Err(Error::NoJwtSection),
        [one] => Ok(one),
        many => Err(Error::MultipleJwtSections { count: many.len() }),
    }
}

/// A module together with the claims verified from its own bytes: the proof a host needs to
/// compile and run it. The bytes cannot be swapped after verification.
#[derive(Debug, Clone)]
pub struct VerifiedModule {
    bytes: std::sync::Arc<[u8]>,
    claims: VerifiedClaims,
}

impl VerifiedModule {
    /// Verifies `bytes` against `policy` at the current time and keeps them with their claims.
    pub fn verify(bytes: impl Into<std::sync::Arc<[u8]>>, policy: &Policy) -> Result<Self> {
        let bytes = bytes.into();
        let claims = verify(&bytes, policy)?;
        Ok(VerifiedModule { bytes, claims })
    }

    /// The module's bytes, exactly as verified.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The verified claims.
    pub fn claims(&self) -> &VerifiedClaims {
        &self.claims
    }
}

/// What `inspect` shows of a module: its claims as written and the outcome of verifying them.
#[derive(Debug)]
pub struct Inspection {
    /// The JWT section's name.
    pub section: String,
    /// The claims, decoded without trusting them.
    pub claims: Claims<ActorMetadata>,
    /// The module's hash as it is now.
    pub computed_hash: String,
    /// The token as embedded.
    pub jwt: String,
    /// The result of verifying under an any-issuer policy.
    pub verification: Result<VerifiedClaims>,
}

/// Reads a module's claims for display, and verifies them under `policy`.
///
/// Fails only if there are no claims to show (not wasm, unsigned, unreadable token).
pub fn inspect(module: &[u8], policy: &Policy) -> Result<Inspection> {
    let sections = ModuleSections::parse(module)?;
    let section = sections.jwt_sections().first().ok_or(Error::NoJwtSection)?;
    let jwt = String::from_utf8_lossy(section.data).trim().to_string();
    let claims = jwt::decode_unverified::<ActorMetadata>(&jwt)?;
    Ok(Inspection {
        section: section.name.to_string(),
        claims,
        computed_hash: sections.hash(),
        jwt,
        verification: verify(module, policy),
    })
}
