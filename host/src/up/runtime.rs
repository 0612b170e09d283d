//! A running host: actors, providers, links, metrics, and graceful drain.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, RwLock, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use sigil_claims::Policy;
use sigil_providers::{
    ActorInvoker, Link, LinkDefinition, LinkError, Provider, ProviderRegistry, ProviderStatus,
};
use tokio::sync::{Notify, Semaphore};

use super::lattice::ActorRouter;
use super::metrics::Metrics;
use crate::dispatch::RegistryDispatch;
use crate::engine::{EngineConfig, InvocationError, LoadError};
use crate::oci::{Fetched, ModuleSource, Registry};
use crate::policy::{Enforcer, PolicyDenied};
use crate::{Actor, Host};

/// Why the running host could not serve an invocation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RuntimeError {
    /// No actor with that key or name is loaded.
    #[error("no actor {0} is running on this host")]
    NoSuchActor(String),
    /// The host is shutting down and takes no new work.
    #[error("the host is shutting down and takes no new invocations")]
    Draining,
    /// The invocation failed.
    #[error(transparent)]
    Invocation(#[from] InvocationError),
}

/// Told of every actor a running host starts after it began (over the control interface,
/// for a spec from the network...), so that the actor also takes its workflow steps.
#[async_trait]
pub trait ActorStarted: Send + Sync {
    /// `actor` was just loaded.
    async fn started(&self, actor: &Arc<Actor>);
}

/// An actor could not be started or updated from a file or a registry.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The module could not be read or pulled.
    #[error("{0}")]
    Fetch(String),
    /// The module was refused or could not be loaded.
    #[error(transparent)]
    Load(#[from] LoadError),
}

/// A link could not be added because of its actor or its provider.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RuntimeLinkError {
    /// The link names an actor that is not loaded.
    #[error(
        "the link names actor {0:?}, which is not loaded (give a loaded actor's name or public key)"
    )]
    NoSuchActor(String),
    /// The registry refused it.
    #[error(transparent)]
    Link(#[from] LinkError),
    /// The claims allow it, and the host's policy refused it.
    #[error(transparent)]
    Denied(#[from] PolicyDenied),
}

/// Hands provider deliveries (HTTP requests, messages) to the runtime.
struct Gateway {
    runtime: OnceLock<Weak<Runtime>>,
}

#[async_trait]
impl ActorInvoker for Gateway {
    async fn invoke_actor(
        &self,
        actor: &str,
        operation: &str,
        payload: Vec<u8>,
    ) -> Result<Vec<u8>, String> {
        let Some(runtime) = self.runtime.get().and_then(Weak::upgrade) else {
            return Err("the host has stopped".to_string());
        };
        runtime
            .invoke(actor, operation, payload)
            .await
            .map_err(|e| e.to_string())
    }
}

/// A summary of the host, for the health endpoint.
#[derive(Debug, Clone)]
pub struct HostStatus {
    /// Whether the host serves (not draining, every provider healthy).
    pub ready: bool,
    /// Whether it is shutting down.
    pub draining: bool,
    /// How long it has run.
    pub uptime: Duration,
    /// Invocations running now.
    pub in_flight: usize,
    /// Loaded actors: name, public key.
    pub actors: Vec<(String, String)>,
    /// Provider instances and their health.
    pub providers: Vec<ProviderStatus>,
    /// Applied links.
    pub links: usize,
}

/// The running host: a [`Host`] whose actors reach providers through links, invoked
/// asynchronously on the blocking pool with a bound on concurrency.
pub struct Runtime {
    host: Arc<Host>,
    router: Arc<ActorRouter>,
    /// Per-actor limits on invocations at once, by public key (none: only the host's).
    scales: RwLock<HashMap<String, (usize, Arc<Semaphore>)>>,
    registry: Arc<ProviderRegistry>,
    metrics: Arc<Metrics>,
    permits: Semaphore,
    in_flight: AtomicUsize,
    idle: Notify,
    draining: AtomicBool,
    started: Instant,
    /// Where modules come from when named by reference.
    modules: OnceLock<Arc<Registry>>,
    /// Told of each actor loaded.
    on_start: OnceLock<Arc<dyn ActorStarted>>,
    /// Where each running actor's module came from (a file, or `oci://...@sha256:...`), by
    /// public key.
    origins: RwLock<HashMap<String, String>>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("host", &self.host)
            .field("registry", &self.registry)
            .finish_non_exhaustive()
    }
}

/// Counts an invocation in flight for as long as it lives.
struct InFlight<'a>(&'a Runtime);

impl<'a> InFlight<'a> {
    fn enter(runtime: &'a Runtime) -> Self {
        runtime.in_flight.fetch_add(1, Ordering::SeqCst);
        runtime.metrics.in_flight().inc();
        InFlight(runtime)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.metrics.in_flight().dec();
        if self.0.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

impl Runtime {
    /// A runtime with no actors or providers yet. Must be called inside a multi-threaded
    /// tokio runtime, which drives the providers.
    pub fn new(engine: EngineConfig, policy: Policy) -> Result<Arc<Self>, LoadError> {
        Self::with_enforcer(engine, policy, None)
    }

    /// [`Runtime::new`], with actor starts, links and capability calls also put to the
    /// host's policy (after the claims allow them).
    pub fn with_enforcer(
        engine: EngineConfig,
        policy: Policy,
        enforcer: Option<Enforcer>,
    ) -> Result<Arc<Self>, LoadError> {
        let gateway = Arc::new(Gateway {
            runtime: OnceLock::new(),
        });
        let registry = Arc::new(ProviderRegistry::new(gateway.clone()));
        let metrics = Arc::new(Metrics::new());
        let router = Arc::new(ActorRouter::new());
        let dispatch = RegistryDispatch::new(registry.clone(), tokio::runtime::Handle::current())
            .with_observer(metrics.clone())
            .with_actor_calls(router.clone());
        let concurrency = usize::try_from(engine.max_instances).unwrap_or(256).max(1);
        let mut builder = Host::builder()
            .engine_config(engine)
            .policy(policy)
            .providers(Arc::new(dispatch));
        if let Some(enforcer) = enforcer {
            builder = builder.enforcer(enforcer);
        }
        let host = builder.build()?;
        let runtime = Arc::new(Runtime {
            host: Arc::new(host),
            router: router.clone(),
            scales: RwLock::new(HashMap::new()),
            registry,
            metrics,
            permits: Semaphore::new(concurrency),
            in_flight: AtomicUsize::new(0),
            idle: Notify::new(),
            draining: AtomicBool::new(false),
            started: Instant::now(),
            modules: OnceLock::new(),
            on_start: OnceLock::new(),
            origins: RwLock::new(HashMap::new()),
        });
        let _ = gateway.runtime.set(Arc::downgrade(&runtime));
        router.attach(&runtime);
        Ok(runtime)
    }

    /// Joins `lattice`: actors on this host take calls from other hosts' actors, and
    /// calls to actors this host does not run go to the lattice. `trusted` names other
    /// cluster keys whose calls are accepted.
    pub async fn join_lattice(
        &self,
        lattice: sigil_providers::plugin::Lattice,
        trusted: &[String],
    ) -> Result<(), String> {
        self.router.join(lattice, trusted).await
    }

    /// Sets who is told of each actor loaded from now on (once; later calls are ignored).
    pub fn on_actor_started(&self, hook: Arc<dyn ActorStarted>) {
        let _ = self.on_start.set(hook);
    }

    /// Sets where modules named by `oci://` reference are pulled from (once; later calls
    /// are ignored).
    pub fn set_module_registry(&self, registry: Arc<Registry>) {
        let _ = self.modules.set(registry);
    }

    /// Where modules named by reference are pulled from, when set.
    pub fn module_registry(&self) -> Option<&Arc<Registry>> {
        self.modules.get()
    }

    async fn fetch(&self, source: &ModuleSource) -> Result<Fetched, StartError> {
        match (source, self.modules.get()) {
            (_, Some(registry)) => registry
                .fetch(source)
                .await
                .map_err(|e| StartError::Fetch(e.to_string())),
            (ModuleSource::File(path), None) => {
                let bytes = tokio::fs::read(path).await.map_err(|e| {
                    StartError::Fetch(format!("cannot read {}: {e}", path.display()))
                })?;
                Ok(Fetched {
                    bytes: bytes.into(),
                    origin: path.display().to_string(),
                })
            }
            (ModuleSource::Oci(r), None) => Err(StartError::Fetch(format!(
                "{r}: this host pulls no modules from registries"
            ))),
        }
    }

    /// Reads or pulls a module, then loads it as [`Runtime::load_actor`] does; the host
    /// reports where it came from (the reference pinned to its digest, for a pull).
    pub async fn start_actor(&self, source: &ModuleSource) -> Result<Arc<Actor>, StartError> {
        let fetched = self.fetch(source).await?;
        let actor = self.load_actor(fetched.bytes).await?;
        tracing::info!(actor = actor.name(), subject = actor.subject(), module = %fetched.origin, "actor started");
        self.set_origin(actor.subject(), fetched.origin);
        Ok(actor)
    }

    /// Reads or pulls a newer revision, then updates as [`Runtime::update_actor`] does.
    pub async fn update_actor_from(&self, source: &ModuleSource) -> Result<Arc<Actor>, StartError> {
        let fetched = self.fetch(source).await?;
        let actor = self.update_actor(fetched.bytes).await?;
        self.set_origin(actor.subject(), fetched.origin);
        Ok(actor)
    }

    /// Records where a running actor's module came from.
    pub fn set_origin(&self, subject: &str, origin: String) {
        write(&self.origins).insert(subject.to_string(), origin);
    }

    /// The running actor whose module came from `origin` (a file, or a pinned reference).
    pub fn actor_with_origin(&self, origin: &str) -> Option<String> {
        read(&self.origins)
            .iter()
            .find(|(_, o)| o.as_str() == origin)
            .map(|(subject, _)| subject.clone())
    }

    /// Forgets where an actor's module came from (it was replaced by bytes sent to the
    /// host).
    pub fn clear_origin(&self, subject: &str) {
        write(&self.origins).remove(subject);
    }

    /// Where a running actor's module came from: its file, or the `oci://` reference
    /// pinned to the digest that runs; `None` for bytes sent to the host.
    pub fn actor_origin(&self, subject: &str) -> Option<String> {
        read(&self.origins).get(subject).cloned()
    }

    /// Replaces a running actor with a newer signed revision (same public key, higher
    /// `rev`) without dropping invocations: those running finish on the old revision.
    pub async fn update_actor(
        &self,
        bytes: impl Into<Arc<[u8]>> + Send + 'static,
    ) -> Result<Arc<Actor>, LoadError> {
        let (old, new) = self.on_blocking_pool(|h| h.update_actor(bytes)).await?;
        if old.claims().call_alias() != new.claims().call_alias() {
            self.router
                .unserve_actor(old.subject(), old.claims().call_alias())
                .await;
        }
        if let Err(e) = self.router.serve_actor(&new).await {
            tracing::warn!(actor = new.name(), error = %e, "the actor takes no calls from the lattice");
        }
        Ok(new)
    }

    /// Stops an actor (by key, call alias or name): its links are removed, it takes no
    /// new invocations, and those running finish.
    pub async fn stop_actor(&self, target: &str) -> Result<Arc<Actor>, RuntimeError> {
        let actor = self
            .find_actor(target)
            .ok_or_else(|| RuntimeError::NoSuchActor(target.to_string()))?;
        self.router
            .unserve_actor(actor.subject(), actor.claims().call_alias())
            .await;
        self.registry.remove_actor_links(actor.subject()).await;
        self.host.remove_actor(actor.subject());
        write(&self.scales).remove(actor.subject());
        write(&self.origins).remove(actor.subject());
        self.update_counts();
        tracing::info!(
            actor = actor.name(),
            subject = actor.subject(),
            "actor stopped"
        );
        Ok(actor)
    }

    /// Limits how many invocations of an actor run at once on this host (`0`: no limit
    /// beyond the host's own).
    pub fn scale_actor(&self, target: &str, max: usize) -> Result<(), RuntimeError> {
        let actor = self
            .find_actor(target)
            .ok_or_else(|| RuntimeError::NoSuchActor(target.to_string()))?;
        let mut scales = write(&self.scales);
        if max == 0 {
            scales.remove(actor.subject());
        } else {
            scales.insert(
                actor.subject().to_string(),
                (max, Arc::new(Semaphore::new(max))),
            );
        }
        tracing::info!(actor = actor.name(), max, "actor scaled");
        Ok(())
    }

    /// The limit [`Runtime::scale_actor`] set for an actor (by public key), if any.
    pub fn actor_scale(&self, subject: &str) -> Option<usize> {
        read(&self.scales).get(subject).map(|(max, _)| *max)
    }

    /// An actor by public key, call alias or name (a name must be unique on this host).
    pub fn find_actor(&self, target: &str) -> Option<Arc<Actor>> {
        self.host.actor(target).or_else(|| {
            self.host
                .actors()
                .into_iter()
                .find(|a| a.claims().call_alias() == Some(target))
        })
    }

    /// Invokes an actor for another actor's call. It takes no concurrency permit: the
    /// caller holds one and waits for this call, so waiting for a second permit could
    /// deadlock a busy host. Calls nest at most `MAX_DEPTH` deep, which bounds the extra
    /// instances.
    pub async fn invoke_nested(
        &self,
        actor: &Arc<Actor>,
        operation: &str,
        payload: &[u8],
    ) -> Result<Vec<u8>, RuntimeError> {
        self.refuse_when_draining()?;
        let _in_flight = InFlight::enter(self);
        self.run(actor, operation, payload).await
    }

    fn refuse_when_draining(&self) -> Result<(), RuntimeError> {
        if self.draining.load(Ordering::SeqCst) {
            self.metrics.refused();
            return Err(RuntimeError::Draining);
        }
        Ok(())
    }

    /// Runs one invocation on the calling task and counts it: the engine yields at every
    /// epoch tick and host calls await their providers, so no thread is blocked and no
    /// hand-off is paid.
    async fn run(
        &self,
        actor: &Actor,
        operation: &str,
        payload: &[u8],
    ) -> Result<Vec<u8>, RuntimeError> {
        let started = Instant::now();
        let result = self
            .host
            .invoke_async(actor, operation, payload)
            .await
            .map_err(RuntimeError::from);
        self.metrics
            .invocation(actor.name(), operation, result.is_ok(), started.elapsed());
        result
    }

    /// The host underneath.
    pub fn host(&self) -> &Arc<Host> {
        &self.host
    }

    /// The provider registry.
    pub fn registry(&self) -> &Arc<ProviderRegistry> {
        &self.registry
    }

    /// The metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Runs `load` (verifying and compiling a module, which takes time) on the blocking
    /// pool.
    async fn on_blocking_pool<T: Send + 'static>(
        &self,
        load: impl FnOnce(&Host) -> Result<T, LoadError> + Send + 'static,
    ) -> Result<T, LoadError> {
        let host = self.host.clone();
        tokio::task::spawn_blocking(move || load(&host))
            .await
            .map_err(|e| LoadError::Compile {
                message: format!("the loading thread failed: {e}"),
            })?
    }

    /// Verifies, compiles and loads an actor (on the blocking pool: compiling takes time).
    pub async fn load_actor(
        &self,
        bytes: impl Into<Arc<[u8]>> + Send + 'static,
    ) -> Result<Arc<Actor>, LoadError> {
        let actor = self.on_blocking_pool(|h| h.load_actor(bytes)).await?;
        if let Err(e) = self.router.serve_actor(&actor).await {
            tracing::warn!(actor = actor.name(), error = %e, "the actor takes no calls from the lattice");
        }
        if let Some(hook) = self.on_start.get() {
            hook.started(&actor).await;
        }
        self.update_counts();
        Ok(actor)
    }

    /// Starts a provider instance.
    pub async fn add_provider(
        &self,
        name: &str,
        provider: Arc<dyn Provider>,
    ) -> Result<(), LinkError> {
        self.registry.add_provider(name, provider).await
    }

    /// Applies a link; its actor must be loaded, and the host's policy, if any, must allow
    /// it.
    pub async fn add_link(&self, definition: &LinkDefinition) -> Result<(), RuntimeLinkError> {
        let actor = self.permitted_link_actor(definition).await?;
        self.registry
            .add_link(actor.identity().clone(), definition)
            .await?;
        self.update_counts();
        Ok(())
    }

    /// Checks a link as [`Runtime::add_link`] would (its actor, the claims, the policy,
    /// the provider's settings) without applying it: nothing is bound or subscribed.
    pub async fn check_link(&self, definition: &LinkDefinition) -> Result<(), RuntimeLinkError> {
        let actor = self.permitted_link_actor(definition).await?;
        self.registry
            .check_link(actor.identity().clone(), definition)
            .await?;
        Ok(())
    }

    /// The actor a link binds, once the host's policy (if any) allows the link. The claims
    /// come first: a link they refuse is refused by the registry with its own message, and
    /// never reaches the policy.
    async fn permitted_link_actor(
        &self,
        definition: &LinkDefinition,
    ) -> Result<Arc<crate::Actor>, RuntimeLinkError> {
        let actor = self
            .host
            .actor(&definition.actor)
            .ok_or_else(|| RuntimeLinkError::NoSuchActor(definition.actor.clone()))?;
        if let Some(enforcer) = self.host.enforcer()
            && actor.identity().has_capability(&definition.contract_id)
        {
            enforcer
                .check_link(actor.identity(), actor.claims().tags(), definition)
                .await?;
        }
        Ok(actor)
    }

    /// Removes a link of an actor (by key or name).
    pub async fn remove_link(
        &self,
        actor: &str,
        contract_id: &str,
        link_name: &str,
    ) -> Result<Link, RuntimeLinkError> {
        let subject = self
            .host
            .actor(actor)
            .map_or_else(|| actor.to_string(), |a| a.subject().to_string());
        let link = self
            .registry
            .remove_link(&subject, contract_id, link_name)
            .await?;
        self.update_counts();
        Ok(link)
    }

    /// Invokes `operation` on an actor (by key or name) on the calling task, at most as
    /// many at once as the engine has instance slots.
    pub async fn invoke(
        &self,
        actor: &str,
        operation: &str,
        payload: Vec<u8>,
    ) -> Result<Vec<u8>, RuntimeError> {
        self.refuse_when_draining()?;
        let actor = self
            .host
            .actor(actor)
            .ok_or_else(|| RuntimeError::NoSuchActor(actor.to_string()))?;
        let _in_flight = InFlight::enter(self);
        let scale = read(&self.scales)
            .get(actor.subject())
            .map(|(_, s)| s.clone());
        let _scaled = match scale {
            Some(s) => Some(
                s.acquire_owned()
                    .await
                    .map_err(|_| RuntimeError::Draining)?,
            ),
            None => None,
        };
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| RuntimeError::Draining)?;
        self.run(&actor, operation, &payload).await
    }

    /// Health and inventory.
    pub async fn status(&self) -> HostStatus {
        let providers = self.registry.status().await;
        for p in &providers {
            self.metrics
                .provider_health(&p.name, p.kind, p.contract_id, p.health.is_healthy());
        }
        let draining = self.draining.load(Ordering::SeqCst);
        HostStatus {
            ready: !draining && providers.iter().all(|p| p.health.is_healthy()),
            draining,
            uptime: self.started.elapsed(),
            in_flight: self.in_flight.load(Ordering::SeqCst),
            actors: self
                .host
                .actors()
                .iter()
                .map(|a| (a.name().to_string(), a.subject().to_string()))
                .collect(),
            links: self.registry.links().len(),
            providers,
        }
    }

    /// True once shutdown has begun.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Shuts down gracefully: the providers that bring work in (HTTP servers, message
    /// subscriptions) stop taking it and let their deliveries finish; then new invocations are
    /// refused and those in flight may finish within `timeout`; then every other provider
    /// stops. Returns the number of invocations still running when the time ran out.
    pub async fn shutdown(&self, timeout: Duration) -> usize {
        let deadline = tokio::time::Instant::now() + timeout;
        tracing::info!(
            ?timeout,
            in_flight = self.in_flight.load(Ordering::SeqCst),
            "draining"
        );
        if tokio::time::timeout_at(deadline, self.registry.quiesce())
            .await
            .is_err()
        {
            tracing::warn!("inbound providers did not stop within the drain timeout");
        }
        // No new calls from the lattice: other hosts' actors find another host, if any.
        self.router.leave().await;
        self.draining.store(true, Ordering::SeqCst);
        let left = loop {
            let notified = self.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let n = self.in_flight.load(Ordering::SeqCst);
            if n == 0 {
                break 0;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                break self.in_flight.load(Ordering::SeqCst);
            }
        };
        if left > 0 {
            tracing::warn!(in_flight = left, "drain timeout: invocations still running");
        }
        self.permits.close();
        self.registry.shutdown().await;
        tracing::info!("host stopped");
        left
    }

    fn update_counts(&self) {
        self.metrics
            .set_counts(self.host.actors().len(), self.registry.links().len());
    }
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
