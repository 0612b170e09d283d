//! Who is calling: an actor's identity as its verified claims state it.

use std::collections::BTreeSet;

use sigil_claims::VerifiedClaims;

/// The identity and grants of an actor. Providers receive it with every call and link,
/// and scope their work to it (key prefixes, object roots).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ActorIdentity {
    /// The actor's module public key (`M...`).
    pub subject: String,
    /// The actor's name (its public key if it has none).
    pub name: String,
    /// The account that signed it.
    pub issuer: String,
    /// Granted capability contract IDs.
    pub capabilities: BTreeSet<String>,
}

impl ActorIdentity {
    /// The identity stated by verified claims.
    pub fn from_claims(claims: &VerifiedClaims) -> Self {
        ActorIdentity {
            subject: claims.subject().to_string(),
            name: claims.name().unwrap_or(claims.subject()).to_string(),
            issuer: claims.issuer().to_string(),
            capabilities: claims.capabilities().iter().cloned().collect(),
        }
    }

    /// True if the actor's claims grant this contract ID.
    pub fn has_capability(&self, contract_id: &str) -> bool {
        self.capabilities.contains(contract_id)
    }

    /// `name (subject)`, for messages.
    pub fn describe(&self) -> String {
        format!("{} ({})", self.name, self.subject)
    }
}
