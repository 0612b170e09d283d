//! Dispatch of an actor's host calls: the capability gate first, then the host's built-in
//! capabilities, then the providers.
//!
//! The gate is not a layer anyone can remove or reorder: [`CapabilityGate`] is the only
//! [`HostCallHandler`] the host gives an actor, and it checks the signed claims before it
//! looks at anything else. A call for a capability the actor was not granted is refused with
//! a message naming the capability and the actor, and no provider ever sees it. Only a call
//! the claims allow is then put to the host's policy, if it has one
//! ([`crate::policy::InvocationGuard`]): a policy can refuse what the claims grant, never
//! grant what they lack.

mod builtins;
mod registry;

pub use registry::{ProviderCallObserver, RegistryDispatch};

/// Serves actors' calls to other actors (`sigil:actor`), after the gate allowed them. The
/// call's binding names the target actor.
pub trait ActorCalls: Send + Sync + 'static {
    /// Serves one call. `Err` is the message the calling actor receives.
    fn call<'a>(&'a self, caller: &'a ActorIdentity, call: HostCall<'a>) -> HostCallFuture<'a>;
}

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use sigil_claims::caps;

use crate::engine::{HostCall, HostCallFuture, HostCallHandler};
use crate::policy::InvocationGuard;

pub use sigil_providers::ActorIdentity;

/// The seam for capability providers: serves host calls that passed the gate and are not
/// built in. Implementations scope every request to `actor`.
pub trait ProviderDispatch: Send + Sync + 'static {
    /// Serves one call. `Err` is the message the actor receives.
    fn dispatch(&self, actor: &ActorIdentity, call: &HostCall<'_>) -> Result<Vec<u8>, String>;

    /// Serves one call of an asynchronous invocation; the default answers with
    /// [`ProviderDispatch::dispatch`].
    fn dispatch_async<'a>(
        &'a self,
        actor: &'a ActorIdentity,
        call: HostCall<'a>,
    ) -> HostCallFuture<'a> {
        let result = self.dispatch(actor, &call);
        Box::pin(std::future::ready(result))
    }
}

/// No providers: every non-built-in capability is reported as not linked.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoProviders;

impl ProviderDispatch for NoProviders {
    fn dispatch(&self, actor: &ActorIdentity, call: &HostCall<'_>) -> Result<Vec<u8>, String> {
        Err(format!(
            "no provider is linked for {} (link `{}`) to actor {} ({}); declare a link in the \
             host configuration",
            call.namespace, call.binding, actor.name, actor.subject
        ))
    }
}

/// Counters of what the gate saw, shared by all invocations of one actor.
#[derive(Debug, Default)]
pub struct GateStats {
    /// Host calls allowed through.
    pub allowed: AtomicU64,
    /// Host calls refused for lack of a capability claim.
    pub denied: AtomicU64,
    /// Host calls the claims allowed and the host's policy refused.
    pub policy_denied: AtomicU64,
}

/// The capability gate of one actor: the [`HostCallHandler`] every invocation of it gets.
pub struct CapabilityGate {
    actor: Arc<ActorIdentity>,
    providers: Arc<dyn ProviderDispatch>,
    stats: GateStats,
    policy: Option<InvocationGuard>,
}

impl std::fmt::Debug for CapabilityGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CapabilityGate")
            .field("actor", &self.actor)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl CapabilityGate {
    /// A gate for `actor`, in front of `providers`.
    pub fn new(actor: Arc<ActorIdentity>, providers: Arc<dyn ProviderDispatch>) -> Self {
        CapabilityGate {
            actor,
            providers,
            stats: GateStats::default(),
            policy: None,
        }
    }

    /// Puts every call the claims allow to `guard` as well.
    pub fn with_policy(mut self, guard: InvocationGuard) -> Self {
        self.policy = Some(guard);
        self
    }

    /// The actor this gate guards.
    pub fn actor(&self) -> &ActorIdentity {
        &self.actor
    }

    /// What the gate has allowed and denied so far.
    pub fn stats(&self) -> &GateStats {
        &self.stats
    }
}

impl CapabilityGate {
    /// The gate itself: `Err` when the actor holds no signed claim for the call's
    /// capability.
    fn check(&self, call: &HostCall<'_>) -> Result<(), String> {
        if !self.actor.has_capability(call.namespace) {
            self.stats.denied.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                actor = %self.actor.name,
                subject = %self.actor.subject,
                capability = call.namespace,
                operation = call.operation,
                "capability denied"
            );
            let alias = caps::WELL_KNOWN
                .iter()
                .find(|(_, id, _)| *id == call.namespace)
                .map_or(call.namespace, |(alias, _, _)| *alias);
            return Err(format!(
                "capability {} denied: actor {} ({}) has no signed claim for it (sign it with \
                 `--cap {alias}` if it should have one)",
                call.namespace, self.actor.name, self.actor.subject
            ));
        }
        self.stats.allowed.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn count_policy(&self, answer: Result<(), String>) -> Result<(), String> {
        if answer.is_err() {
            self.stats.policy_denied.fetch_add(1, Ordering::Relaxed);
        }
        answer
    }

    /// A built-in capability's answer, or `None` when a provider serves the call.
    fn builtin(&self, call: &HostCall<'_>) -> Option<Result<Vec<u8>, String>> {
        match call.namespace {
            caps::LOGGING => Some(builtins::logging(&self.actor, call)),
            caps::NUMBERGEN => Some(builtins::numbergen(call)),
            _ => None,
        }
    }
}

impl HostCallHandler for CapabilityGate {
    fn host_call(&self, call: &HostCall<'_>) -> Result<Vec<u8>, String> {
        // The gate: before anything else, and for built-ins too.
        self.check(call)?;
        // Then the policy, which may only narrow what the claims allow.
        if let Some(policy) = &self.policy {
            self.count_policy(policy.check(call))?;
        }
        self.builtin(call)
            .unwrap_or_else(|| self.providers.dispatch(&self.actor, call))
    }

    fn host_call_async<'a>(&'a self, call: HostCall<'a>) -> HostCallFuture<'a> {
        if let Err(message) = self.check(&call) {
            return Box::pin(std::future::ready(Err(message)));
        }
        if let Some(policy) = &self.policy {
            match policy.check_cached(&call) {
                Some(Ok(())) => {}
                Some(Err(message)) => {
                    self.stats.policy_denied.fetch_add(1, Ordering::Relaxed);
                    return Box::pin(std::future::ready(Err(message)));
                }
                // Not decided before: ask, then go on as below.
                None => {
                    return Box::pin(async move {
                        self.count_policy(policy.check_async(&call).await)?;
                        match self.builtin(&call) {
                            Some(response) => response,
                            None => self.providers.dispatch_async(&self.actor, call).await,
                        }
                    });
                }
            }
        }
        let answer = self.builtin(&call).transpose();
        match answer {
            Ok(None) => self.providers.dispatch_async(&self.actor, call),
            Ok(Some(response)) => Box::pin(std::future::ready(Ok(response))),
            Err(message) => Box::pin(std::future::ready(Err(message))),
        }
    }

    fn console_log(&self, message: &str) {
        tracing::info!(target: "sigil::actor", actor = %self.actor.name, "{message}");
    }
}
