//! The host: an engine, a policy, the loaded actors, and the dispatch behind them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use sigil_claims::Policy;

use crate::actors::Actor;
use crate::dispatch::{NoProviders, ProviderDispatch};
use crate::engine::{Engine, EngineConfig, InvocationError, Limits, LoadError};
use crate::policy::Enforcer;

/// Builds a [`Host`].
pub struct HostBuilder {
    config: EngineConfig,
    policy: Policy,
    providers: Arc<dyn ProviderDispatch>,
    enforcer: Option<Enforcer>,
}

impl Default for HostBuilder {
    fn default() -> Self {
        HostBuilder {
            config: EngineConfig::default(),
            policy: Policy::new(),
            providers: Arc::new(NoProviders),
            enforcer: None,
        }
    }
}

impl HostBuilder {
    /// Sets the whole engine configuration.
    pub fn engine_config(mut self, config: EngineConfig) -> Self {
        self.config = config;
        self
    }

    /// Sets the per-invocation limits.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.config.limits = limits;
        self
    }

    /// Sets the verification policy applied to every module loaded.
    pub fn policy(mut self, policy: Policy) -> Self {
        self.policy = policy;
        self
    }

    /// Caches compiled actors in `dir` (private to this user).
    pub fn cache_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.config.cache_dir = Some(dir.into());
        self
    }

    /// Serves non-built-in capabilities with `providers`.
    pub fn providers(mut self, providers: Arc<dyn ProviderDispatch>) -> Self {
        self.providers = providers;
        self
    }

    /// Puts actor starts and capability calls to a policy (Rego files, a decision service)
    /// after the claims allow them.
    pub fn enforcer(mut self, enforcer: Enforcer) -> Self {
        self.enforcer = Some(enforcer);
        self
    }

    /// Builds the host.
    pub fn build(self) -> Result<Host, LoadError> {
        Ok(Host {
            engine: Engine::new(self.config)?,
            policy: self.policy,
            providers: self.providers,
            enforcer: self.enforcer,
            actors: RwLock::new(BTreeMap::new()),
            artifacts: std::sync::OnceLock::new(),
        })
    }
}

/// Loaded actors, ready to invoke.
pub struct Host {
    engine: Engine,
    policy: Policy,
    providers: Arc<dyn ProviderDispatch>,
    enforcer: Option<Enforcer>,
    actors: RwLock<BTreeMap<String, Arc<Actor>>>,
    /// The artifact repository WASI steps' artifacts move through, when set.
    artifacts: std::sync::OnceLock<Arc<sigil_providers::blobstore::StagingArea>>,
}

impl std::fmt::Debug for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Host")
            .field("engine", &self.engine)
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl Host {
    /// A builder with default limits, an any-issuer policy and no providers.
    pub fn builder() -> HostBuilder {
        HostBuilder::default()
    }

    /// Sets the artifact repository through which the host moves WASI steps' input and
    /// output artifacts (once; later calls are ignored).
    pub fn set_artifact_store(&self, store: Arc<sigil_providers::blobstore::StagingArea>) {
        let _ = self.artifacts.set(store);
    }

    /// The artifact repository of WASI steps, when set.
    pub fn artifact_store(&self) -> Option<&Arc<sigil_providers::blobstore::StagingArea>> {
        self.artifacts.get()
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The verification policy modules must pass.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The host's policy, if it has one.
    pub fn enforcer(&self) -> Option<&Enforcer> {
        self.enforcer.as_ref()
    }

    /// Verifies, compiles and registers an actor; a newer module with the same public key
    /// replaces the older one. With a policy, the policy must allow it to start.
    pub fn load_actor(&self, bytes: impl Into<Arc<[u8]>>) -> Result<Arc<Actor>, LoadError> {
        let actor = self.prepare(bytes)?;
        tracing::info!(
            actor = actor.name(),
            subject = actor.subject(),
            snapshot = actor.template_info().snapshot,
            from_cache = actor.template_info().from_cache,
            "actor loaded"
        );
        self.actors
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(actor.subject().to_string(), actor.clone());
        Ok(actor)
    }

    /// Verifies and compiles an actor under this host's policy, without registering it.
    fn prepare(&self, bytes: impl Into<Arc<[u8]>>) -> Result<Arc<Actor>, LoadError> {
        Ok(Arc::new(Actor::load_with_policy(
            &self.engine,
            bytes,
            &self.policy,
            self.providers.clone(),
            self.enforcer.as_ref(),
        )?))
    }

    /// Replaces a running actor with a newer signed revision of it: the module must have
    /// the same public key and a higher `rev` than the one running. Invocations already
    /// running finish on the old revision; new ones get the new. Answers the old and the
    /// new actor.
    pub fn update_actor(
        &self,
        bytes: impl Into<Arc<[u8]>>,
    ) -> Result<(Arc<Actor>, Arc<Actor>), LoadError> {
        let actor = self.prepare(bytes)?;
        let subject = actor.subject().to_string();
        let refuse = |reason: String| LoadError::Update {
            subject: subject.clone(),
            reason,
        };
        let mut actors = self
            .actors
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let old = actors
            .get(&subject)
            .cloned()
            .ok_or_else(|| refuse("it is not running on this host (start it instead)".into()))?;
        let (from, to) = (
            old.claims().rev().unwrap_or(0),
            actor.claims().rev().unwrap_or(0),
        );
        if to <= from {
            return Err(refuse(format!(
                "its revision {to} is not newer than the running revision {from}"
            )));
        }
        actors.insert(subject, actor.clone());
        drop(actors);
        tracing::info!(
            actor = actor.name(),
            subject = actor.subject(),
            from,
            to,
            "actor updated"
        );
        Ok((old, actor))
    }

    /// Reads and loads an actor module file.
    pub fn load_actor_file(&self, path: &Path) -> Result<Arc<Actor>, LoadError> {
        let bytes = std::fs::read(path).map_err(|e| LoadError::Io {
            path: path.to_path_buf(),
            source: e,
        })?;
        self.load_actor(bytes)
    }

    /// Finds an actor by public key, or by name when exactly one actor has that name.
    pub fn actor(&self, key_or_name: &str) -> Option<Arc<Actor>> {
        let actors = self
            .actors
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(a) = actors.get(key_or_name) {
            return Some(a.clone());
        }
        let mut named = actors.values().filter(|a| a.name() == key_or_name);
        match (named.next(), named.next()) {
            (Some(a), None) => Some(a.clone()),
            _ => None,
        }
    }

    /// Every loaded actor, by public key.
    pub fn actors(&self) -> Vec<Arc<Actor>> {
        self.actors
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .values()
            .cloned()
            .collect()
    }

    /// Unloads the actor with this public key; invocations already running finish.
    pub fn remove_actor(&self, subject: &str) -> Option<Arc<Actor>> {
        self.actors
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(subject)
    }

    /// Invokes `operation` on `actor` in a fresh instance. Blocks the calling thread for the
    /// length of the invocation (bounded by the deadline).
    pub fn invoke(
        &self,
        actor: &Actor,
        operation: &str,
        payload: &[u8],
    ) -> Result<Vec<u8>, InvocationError> {
        let Some(template) = actor.template() else {
            // A WASI step runs to its end asynchronously; block on it here.
            return wasmtime_wasi::runtime::in_tokio(self.invoke_async(actor, operation, payload));
        };
        let span = tracing::debug_span!("invoke", actor = actor.name(), operation);
        let _guard = span.enter();
        let result = self
            .engine
            .invoke(template, actor.gate().clone(), operation, payload);
        if let Err(e) = &result {
            tracing::debug!(error = %e, "invocation failed");
        }
        result
    }

    /// Invokes `operation` on `actor` in a fresh instance, as a future for a tokio runtime:
    /// host calls await their providers, and a long computation yields the worker at every
    /// epoch tick (see [`Engine::invoke_async`]).
    pub async fn invoke_async(
        &self,
        actor: &Actor,
        operation: &str,
        payload: &[u8],
    ) -> Result<Vec<u8>, InvocationError> {
        use tracing::Instrument;
        let span = tracing::debug_span!("invoke", actor = actor.name(), operation);
        let result = match (actor.template(), actor.wasi_template()) {
            (Some(template), _) => {
                self.engine
                    .invoke_async(template, actor.gate().clone(), operation, payload)
                    .instrument(span)
                    .await
            }
            (None, Some(wasi)) => {
                crate::wasi::run_step(
                    &self.engine,
                    wasi,
                    actor.gate().clone(),
                    actor.name(),
                    operation,
                    payload,
                    self.artifacts.get().map(|a| &**a),
                )
                .instrument(span)
                .await
            }
            (None, None) => Err(InvocationError::Protocol {
                message: "the actor has no compiled module".into(),
            }),
        };
        if let Err(e) = &result {
            tracing::debug!(actor = actor.name(), operation, error = %e, "invocation failed");
        }
        result
    }
}
