//! The `invoke` decision of one actor, with a cache of earlier answers.
//!
//! A cached answer is reused only for an input that is the same in every field the decider
//! says its answers depend on ([`Caching`]): the contract, link and operation always, the
//! payload size and the workflow step when the decider uses them. The actor and the host
//! are fixed for a guard. The cache is dropped when the decider's generation changes (a
//! policy reload), and entries with a time to live expire on their own.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use super::{
    ActorRef, Caching, Decision, DecisionPoint, HostInfo, InputUse, InvocationInput, PolicyDecider,
    WORKFLOW_STEP, WorkflowStep, current_workflow_step,
};
use crate::engine::HostCall;

/// At most this many answers per actor; a full cache starts over.
const CAPACITY: usize = 4096;

/// What a cached answer was given for.
#[derive(Debug, PartialEq, Eq)]
struct Key {
    contract_id: String,
    link_name: String,
    operation: String,
    payload_size: Option<usize>,
    workflow: Option<WorkflowStep>,
}

impl Key {
    fn matches(&self, call: &HostCall<'_>, use_: InputUse, step: Option<&WorkflowStep>) -> bool {
        self.contract_id == call.namespace
            && self.link_name == call.binding
            && self.operation == call.operation
            && self.payload_size == use_.payload_size.then_some(call.payload.len())
            && self.workflow.as_ref() == step.filter(|_| use_.workflow)
    }
}

struct Entry {
    key: Key,
    decision: Decision,
    expires: Option<Instant>,
}

#[derive(Default)]
struct Cache {
    generation: u64,
    entries: HashMap<u64, Entry>,
}

/// Asks the decider whether an actor's capability calls may go ahead, remembering the
/// answers the decider lets it remember.
pub struct InvocationGuard {
    decider: Arc<dyn PolicyDecider>,
    host: Arc<HostInfo>,
    actor: ActorRef,
    cache: Mutex<Cache>,
    denials: Arc<super::DenialLog>,
}

impl std::fmt::Debug for InvocationGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InvocationGuard")
            .field("actor", &self.actor.subject)
            .field("decider", &self.decider.describe())
            .finish_non_exhaustive()
    }
}

fn hash_of(call: &HostCall<'_>, use_: InputUse, step: Option<&WorkflowStep>) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    call.namespace.hash(&mut h);
    call.binding.hash(&mut h);
    call.operation.hash(&mut h);
    if use_.payload_size {
        call.payload.len().hash(&mut h);
    }
    if use_.workflow {
        step.hash(&mut h);
    }
    h.finish()
}

impl InvocationGuard {
    pub(super) fn new(
        decider: Arc<dyn PolicyDecider>,
        host: Arc<HostInfo>,
        actor: ActorRef,
        denials: Arc<super::DenialLog>,
    ) -> Self {
        InvocationGuard {
            decider,
            host,
            actor,
            cache: Mutex::new(Cache::default()),
            denials,
        }
    }

    /// The cached answer for `call`, if there is one that still holds.
    fn cached(
        &self,
        call: &HostCall<'_>,
        step: Option<&WorkflowStep>,
    ) -> (Option<Decision>, Caching, u64) {
        let caching = self.decider.caching();
        let generation = self.decider.generation();
        let use_ = match caching {
            Caching::Never => return (None, caching, generation),
            Caching::UntilChanged(u) | Caching::For(_, u) => u,
        };
        let hash = hash_of(call, use_, step);
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        if cache.generation != generation {
            cache.entries.clear();
            cache.generation = generation;
            return (None, caching, generation);
        }
        let hit = cache.entries.get(&hash).and_then(|e| {
            let fresh = e.expires.is_none_or(|t| Instant::now() < t);
            (fresh && e.key.matches(call, use_, step)).then(|| e.decision.clone())
        });
        (hit, caching, generation)
    }

    fn remember(
        &self,
        call: &HostCall<'_>,
        step: Option<&WorkflowStep>,
        caching: Caching,
        generation: u64,
        decision: &Decision,
    ) {
        let (use_, expires) = match caching {
            Caching::Never => return,
            Caching::UntilChanged(u) => (u, None),
            Caching::For(ttl, u) => (u, Some(Instant::now() + ttl)),
        };
        let key = Key {
            contract_id: call.namespace.to_string(),
            link_name: call.binding.to_string(),
            operation: call.operation.to_string(),
            payload_size: use_.payload_size.then_some(call.payload.len()),
            workflow: step.filter(|_| use_.workflow).cloned(),
        };
        let hash = hash_of(call, use_, step);
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        // An answer of an older policy is not stored under the newer one.
        if cache.generation != generation {
            return;
        }
        if cache.entries.len() >= CAPACITY {
            cache.entries.clear();
        }
        cache.entries.insert(
            hash,
            Entry {
                key,
                decision: decision.clone(),
                expires,
            },
        );
    }

    fn input(
        &self,
        call: &HostCall<'_>,
        step: Option<&WorkflowStep>,
    ) -> Result<serde_json::Value, Decision> {
        let input = InvocationInput {
            actor: &self.actor,
            contract_id: call.namespace,
            link_name: call.binding,
            operation: call.operation,
            payload_size: call.payload.len(),
            workflow: step,
            host: &self.host,
        };
        // Fail closed: a policy is never asked about an input it cannot see.
        serde_json::to_value(&input)
            .map_err(|e| Decision::Deny(format!("cannot build the policy input: {e}")))
    }

    /// The decision for `call`, blocking the thread for a remote decider on a cache miss.
    pub fn check(&self, call: &HostCall<'_>) -> Result<(), String> {
        let step = current_workflow_step();
        let (hit, caching, generation) = self.cached(call, step.as_ref());
        let decision = match hit {
            Some(d) => d,
            None => match self.input(call, step.as_ref()) {
                Ok(input) => {
                    let d = self.decider.decide_blocking(DecisionPoint::Invoke, &input);
                    self.remember(call, step.as_ref(), caching, generation, &d);
                    d
                }
                Err(denied) => denied,
            },
        };
        self.conclude(call, decision)
    }

    /// The answer for `call` if it is cached, else `None` (ask with
    /// [`InvocationGuard::check_async`]).
    pub fn check_cached(&self, call: &HostCall<'_>) -> Option<Result<(), String>> {
        // The step is borrowed where it lives: the hot path copies nothing.
        let (hit, _, _) = WORKFLOW_STEP
            .try_with(|step| self.cached(call, Some(step)))
            .unwrap_or_else(|_| self.cached(call, None));
        hit.map(|d| self.conclude(call, d))
    }

    /// The decision for `call`, awaiting a remote decider on a cache miss.
    pub async fn check_async(&self, call: &HostCall<'_>) -> Result<(), String> {
        let step = current_workflow_step();
        let (hit, caching, generation) = self.cached(call, step.as_ref());
        let decision = match hit {
            Some(d) => d,
            None => match self.input(call, step.as_ref()) {
                Ok(input) => {
                    let d = self.decider.decide(DecisionPoint::Invoke, &input).await;
                    self.remember(call, step.as_ref(), caching, generation, &d);
                    d
                }
                Err(denied) => denied,
            },
        };
        self.conclude(call, decision)
    }

    fn conclude(&self, call: &HostCall<'_>, decision: Decision) -> Result<(), String> {
        match decision {
            Decision::Allow => Ok(()),
            Decision::Deny(reason) => {
                tracing::warn!(
                    actor = %self.actor.name,
                    subject = %self.actor.subject,
                    capability = call.namespace,
                    link = call.binding,
                    operation = call.operation,
                    %reason,
                    "policy denied"
                );
                self.denials.record(
                    DecisionPoint::Invoke,
                    format!(
                        "{} {} (link `{}`) of actor {} ({})",
                        call.namespace,
                        call.operation,
                        call.binding,
                        self.actor.name,
                        self.actor.subject
                    ),
                    &reason,
                );
                Err(format!(
                    "{} {} (link `{}`) denied by policy for actor {} ({}): {reason}",
                    call.namespace,
                    call.operation,
                    call.binding,
                    self.actor.name,
                    self.actor.subject
                ))
            }
        }
    }
}
