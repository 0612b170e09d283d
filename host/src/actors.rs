//! Loading actors: bytes, then verification under the host's policy, then the engine.
//!
//! This is the only way to an [`ActorTemplate`]: the engine accepts nothing but a
//! [`VerifiedModule`], and a `VerifiedModule` exists only for bytes that passed verification.
//! There is no flag, setting or code path that runs an unsigned module.

use std::sync::Arc;

use sigil_claims::{Policy, VerifiedClaims, VerifiedModule};

use crate::dispatch::{ActorIdentity, CapabilityGate, ProviderDispatch};
use crate::engine::{ActorTemplate, Engine, LoadError, TemplateInfo};
use crate::policy::Enforcer;

/// A verified, compiled actor with its capability gate.
pub struct Actor {
    module: VerifiedModule,
    identity: Arc<ActorIdentity>,
    template: ActorTemplate,
    gate: Arc<CapabilityGate>,
}

impl std::fmt::Debug for Actor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Actor")
            .field("identity", &self.identity)
            .field("template", &self.template)
            .finish_non_exhaustive()
    }
}

impl Actor {
    /// Verifies `bytes` under `policy`, then compiles (or loads from the engine's cache) and
    /// pre-links the module, with a capability gate in front of `providers`.
    pub fn load(
        engine: &Engine,
        bytes: impl Into<Arc<[u8]>>,
        policy: &Policy,
        providers: Arc<dyn ProviderDispatch>,
    ) -> Result<Self, LoadError> {
        Self::load_with_policy(engine, bytes, policy, providers, None)
    }

    /// [`Actor::load`] under the host's policy as well: once the claims verify, the policy
    /// decides whether the actor may start (before anything is compiled), and its gate puts
    /// every capability call the claims allow to the policy too.
    pub fn load_with_policy(
        engine: &Engine,
        bytes: impl Into<Arc<[u8]>>,
        policy: &Policy,
        providers: Arc<dyn ProviderDispatch>,
        enforcer: Option<&Enforcer>,
    ) -> Result<Self, LoadError> {
        let module = VerifiedModule::verify(bytes, policy)?;
        if let Some(enforcer) = enforcer {
            enforcer.check_start(module.claims())?;
        }
        let template = engine.prepare(&module)?;
        let identity = Arc::new(ActorIdentity::from_claims(module.claims()));
        let mut gate = CapabilityGate::new(identity.clone(), providers);
        if let Some(enforcer) = enforcer {
            gate = gate.with_policy(enforcer.guard(&identity, module.claims().tags()));
        }
        let gate = Arc::new(gate);
        Ok(Actor {
            module,
            identity,
            template,
            gate,
        })
    }

    /// The verified claims.
    pub fn claims(&self) -> &VerifiedClaims {
        self.module.claims()
    }

    /// Who the actor is and what it may use.
    pub fn identity(&self) -> &Arc<ActorIdentity> {
        &self.identity
    }

    /// The actor's public key.
    pub fn subject(&self) -> &str {
        &self.identity.subject
    }

    /// The actor's name.
    pub fn name(&self) -> &str {
        &self.identity.name
    }

    /// The compiled template.
    pub fn template(&self) -> &ActorTemplate {
        &self.template
    }

    /// How the template was produced (cache, snapshot).
    pub fn template_info(&self) -> TemplateInfo {
        self.template.info()
    }

    /// The capability gate every invocation of this actor goes through.
    pub fn gate(&self) -> &Arc<CapabilityGate> {
        &self.gate
    }
}
