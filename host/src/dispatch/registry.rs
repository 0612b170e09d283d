//! The bridge from the engine's synchronous host calls to the asynchronous providers.

use std::sync::Arc;
use std::time::Instant;

use sigil_providers::{ActorIdentity, ProviderError, ProviderRegistry};
use tokio::runtime::RuntimeFlavor;

use super::{ActorCalls, ProviderDispatch};
use crate::engine::{HostCall, HostCallFuture};

/// Called after every provider call, for metrics.
pub trait ProviderCallObserver: Send + Sync + 'static {
    /// One call of `actor` to `contract_id`/`operation` took `elapsed`; `ok` tells how it
    /// ended.
    fn observe(
        &self,
        actor: &ActorIdentity,
        contract_id: &str,
        operation: &str,
        ok: bool,
        elapsed: std::time::Duration,
    );
}

/// Serves host calls from a [`ProviderRegistry`], never past the invocation's deadline.
///
/// An asynchronous invocation awaits the provider's future where it runs. A synchronous
/// one blocks its thread on the future; on a runtime worker it first steps out of the
/// scheduler (`block_in_place`), so the runtime's other tasks move on.
pub struct RegistryDispatch {
    registry: Arc<ProviderRegistry>,
    runtime: tokio::runtime::Handle,
    observer: Option<Arc<dyn ProviderCallObserver>>,
    actors: Option<Arc<dyn ActorCalls>>,
}

impl std::fmt::Debug for RegistryDispatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryDispatch")
            .field("registry", &self.registry)
            .finish_non_exhaustive()
    }
}

impl RegistryDispatch {
    /// Dispatches to `registry`, driving its futures on `runtime` (a multi-threaded one).
    pub fn new(registry: Arc<ProviderRegistry>, runtime: tokio::runtime::Handle) -> Self {
        RegistryDispatch {
            registry,
            runtime,
            observer: None,
            actors: None,
        }
    }

    /// Serves actors' calls to other actors (`sigil:actor`) with `actors`.
    pub fn with_actor_calls(mut self, actors: Arc<dyn ActorCalls>) -> Self {
        self.actors = Some(actors);
        self
    }

    /// Reports every call to `observer`.
    pub fn with_observer(mut self, observer: Arc<dyn ProviderCallObserver>) -> Self {
        self.observer = Some(observer);
        self
    }
}

impl RegistryDispatch {
    async fn invoke(
        &self,
        actor: &ActorIdentity,
        call: &HostCall<'_>,
    ) -> Result<Vec<u8>, ProviderError> {
        self.registry
            .invoke(
                actor,
                call.namespace,
                call.binding,
                call.operation,
                call.payload,
                call.deadline,
            )
            .await
    }

    /// Runs the call as a task of our runtime, for callers outside any tokio runtime or
    /// inside a single-threaded one.
    /// `done` receives the result.
    fn spawn_invoke(
        &self,
        actor: &ActorIdentity,
        call: &HostCall<'_>,
        done: impl FnOnce(Result<Vec<u8>, ProviderError>) + Send + 'static,
    ) {
        let registry = self.registry.clone();
        let actor = actor.clone();
        let (namespace, binding, operation) = (
            call.namespace.to_string(),
            call.binding.to_string(),
            call.operation.to_string(),
        );
        let payload = call.payload.to_vec();
        let deadline = call.deadline;
        self.runtime.spawn(async move {
            done(
                registry
                    .invoke(&actor, &namespace, &binding, &operation, &payload, deadline)
                    .await,
            );
        });
    }

    fn observe(&self, actor: &ActorIdentity, call: &HostCall<'_>, ok: bool, started: Instant) {
        if let Some(observer) = &self.observer {
            observer.observe(actor, call.namespace, call.operation, ok, started.elapsed());
        }
    }
}

fn lost(call: &HostCall<'_>) -> ProviderError {
    ProviderError::Failed(format!(
        "the {} provider task ended without an answer",
        call.namespace
    ))
}

impl ProviderDispatch for RegistryDispatch {
    fn dispatch(&self, actor: &ActorIdentity, call: &HostCall<'_>) -> Result<Vec<u8>, String> {
        if call.namespace == sigil_claims::caps::ACTOR
            && let Some(actors) = &self.actors
        {
            // A synchronous invocation waits for the called actor on this thread.
            let routed = actors.call(actor, *call);
            return match tokio::runtime::Handle::try_current() {
                Err(_) => self.runtime.block_on(routed),
                Ok(current) if current.runtime_flavor() == RuntimeFlavor::MultiThread => {
                    tokio::task::block_in_place(|| self.runtime.block_on(routed))
                }
                Ok(_) => Err(
                    "actor calls need an asynchronous invocation or a multi-threaded runtime"
                        .to_string(),
                ),
            };
        }
        let started = Instant::now();
        let result = match tokio::runtime::Handle::try_current() {
            Err(_) => self.runtime.block_on(self.invoke(actor, call)),
            // On a multi-threaded runtime's thread (worker or blocking pool): step out of
            // the scheduler first, so its other tasks move on.
            Ok(current) if current.runtime_flavor() == RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(|| self.runtime.block_on(self.invoke(actor, call)))
            }
            // Inside a single-threaded runtime, which cannot block: hand the call to our
            // runtime and wait for the answer, never past the deadline.
            Ok(_) => {
                let (tx, rx) = std::sync::mpsc::sync_channel(1);
                self.spawn_invoke(actor, call, move |result| {
                    let _ = tx.send(result);
                });
                let wait = call.deadline.saturating_duration_since(Instant::now());
                rx.recv_timeout(wait).unwrap_or_else(|_| {
                    Err(ProviderError::Timeout {
                        contract_id: call.namespace.to_string(),
                        operation: call.operation.to_string(),
                        elapsed: wait,
                    })
                })
            }
        };
        self.observe(actor, call, result.is_ok(), started);
        result.map_err(|e| e.to_string())
    }

    fn dispatch_async<'a>(
        &'a self,
        actor: &'a ActorIdentity,
        call: HostCall<'a>,
    ) -> HostCallFuture<'a> {
        if call.namespace == sigil_claims::caps::ACTOR
            && let Some(actors) = &self.actors
        {
            return actors.call(actor, call);
        }
        let span = tracing::debug_span!(
            "provider.call",
            otel.name = %format_args!("{} {}", call.namespace, call.operation),
            otel.kind = "client",
            sigil.capability = call.namespace,
            sigil.link = call.binding,
            sigil.operation = call.operation,
            sigil.actor = %actor.name,
        );
        Box::pin(tracing::Instrument::instrument(
            async move {
                let started = Instant::now();
                let result = if tokio::runtime::Handle::try_current().is_ok() {
                    // Polled by a tokio worker: await the provider right here.
                    self.invoke(actor, &call).await
                } else {
                    let (tx, rx) = tokio::sync::oneshot::channel();
                    self.spawn_invoke(actor, &call, move |result| {
                        let _ = tx.send(result);
                    });
                    rx.await.unwrap_or_else(|_| Err(lost(&call)))
                };
                self.observe(actor, &call, result.is_ok(), started);
                result.map_err(|e| e.to_string())
            },
            span,
        ))
    }
}
