//! Loading actors: bytes, then verification under the host's policy, then the engine.
//!
//! This is the only way to an [`ActorTemplate`]: the engine accepts nothing but a
//! [`VerifiedModule`], and a `VerifiedModule` exists only for bytes that passed verification.
//! There is no flag, setting or code path that runs an unsigned module.

use std::sync::Arc;

use sigil_claims::{Policy, VerifiedClaims, VerifiedModule};

use crate::dispatch::{ActorIdentity, CapabilityGate, ProviderDispatch};
use crate::engine::{
    ActorTemplate, Engine, LoadError, TemplateInfo, WasiTemplate, is_wasi_command,
};
use crate::policy::Enforcer;

/// A verified, compiled actor with its capability gate: a waPC actor, or a WASI command
/// module run as a workflow step (see [`crate::wasi`]).
pub struct Actor {
    module: VerifiedModule,
    identity: Arc<ActorIdentity>,
    kind: Kind,
    gate: Arc<CapabilityGate>,
}

/// What kind of module an actor is.
enum Kind {
    Wapc(ActorTemplate),
    Wasi(WasiTemplate),
}

impl std::fmt::Debug for Actor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Actor")
            .field("identity", &self.identity)
            .field("wasi", &self.is_wasi())
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
        let kind = if is_wasi_command(module.bytes()) {
            Kind::Wasi(engine.prepare_wasi(&module)?)
        } else {
            Kind::Wapc(engine.prepare(&module)?)
        };
        let identity = Arc::new(ActorIdentity::from_claims(module.claims()));
        let mut gate = CapabilityGate::new(identity.clone(), providers);
        if let Some(enforcer) = enforcer {
            gate = gate.with_policy(enforcer.guard(&identity, module.claims().tags()));
        }
        let gate = Arc::new(gate);
        Ok(Actor {
            module,
            identity,
            kind,
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

    /// The compiled waPC template (none for a WASI module).
    pub fn template(&self) -> Option<&ActorTemplate> {
        match &self.kind {
            Kind::Wapc(t) => Some(t),
            Kind::Wasi(_) => None,
        }
    }

    /// The compiled WASI command module (none for a waPC actor).
    pub fn wasi_template(&self) -> Option<&WasiTemplate> {
        match &self.kind {
            Kind::Wasi(t) => Some(t),
            Kind::Wapc(_) => None,
        }
    }

    /// Whether it is a WASI command module rather than a waPC actor.
    pub fn is_wasi(&self) -> bool {
        matches!(self.kind, Kind::Wasi(_))
    }

    /// How the template was produced (cache, snapshot).
    pub fn template_info(&self) -> TemplateInfo {
        match &self.kind {
            Kind::Wapc(t) => t.info(),
            Kind::Wasi(t) => t.info(),
        }
    }

    /// The capability gate every invocation of this actor goes through.
    pub fn gate(&self) -> &Arc<CapabilityGate> {
        &self.gate
    }
}
