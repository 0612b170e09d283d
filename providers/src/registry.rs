//! The registry: provider instances by name, and the links that bind actors to them.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use crate::{
    ActorIdentity, ActorInvoker, Health, Invocation, Link, LinkDefinition, Provider, ProviderError,
};

/// Why a link or a provider instance could not be added or removed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LinkError {
    /// The link names a provider instance that does not exist.
    #[error(
        "link to {contract_id} for actor {actor}: no provider instance named `{provider}` (known: {known})"
    )]
    UnknownProvider {
        /// The actor.
        actor: String,
        /// The contract.
        contract_id: String,
        /// The missing instance.
        provider: String,
        /// The instances that exist.
        known: String,
    },
    /// The provider instance serves another contract.
    #[error(
        "link to {contract_id} for actor {actor}: provider `{provider}` serves {serves}, not {contract_id}"
    )]
    WrongContract {
        /// The actor.
        actor: String,
        /// The contract of the link.
        contract_id: String,
        /// The instance.
        provider: String,
        /// What it serves.
        serves: String,
    },
    /// The actor's signed claims do not grant the contract.
    #[error(
        "link to {contract_id} refused: actor {actor} has no signed claim for it; re-sign the \
         actor with that capability or remove the link"
    )]
    NotClaimed {
        /// The actor.
        actor: String,
        /// The contract.
        contract_id: String,
    },
    /// A link with the same actor, contract and name exists.
    #[error("actor {actor} already has a link `{link_name}` to {contract_id}; remove it first")]
    Duplicate {
        /// The actor.
        actor: String,
        /// The contract.
        contract_id: String,
        /// The link name.
        link_name: String,
    },
    /// No such link.
    #[error("actor {actor} has no link `{link_name}` to {contract_id}")]
    NoSuchLink {
        /// The actor.
        actor: String,
        /// The contract.
        contract_id: String,
        /// The link name.
        link_name: String,
    },
    /// A provider instance of that name exists.
    #[error("a provider instance named `{0}` exists already")]
    DuplicateProvider(String),
    /// The provider refused the link (its configuration) or failed to start.
    #[error("provider `{provider}`: {error}")]
    Provider {
        /// The instance.
        provider: String,
        /// What it said.
        error: ProviderError,
    },
}

/// One provider instance and what the host knows about it.
#[derive(Clone)]
struct Instance {
    provider: Arc<dyn Provider>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct RouteKey {
    actor: String,
    contract_id: String,
    link_name: String,
}

#[derive(Clone)]
struct Route {
    link: Arc<Link>,
    provider: Arc<dyn Provider>,
}

/// The status of one provider instance, for health endpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderStatus {
    /// The instance name.
    pub name: String,
    /// The implementation (`redis`, `nats`, ...).
    pub kind: &'static str,
    /// The contract it serves.
    pub contract_id: &'static str,
    /// Its health.
    pub health: Health,
    /// How many links it serves.
    pub links: usize,
}

/// Provider instances by name, and the links that route actors' calls to them.
pub struct ProviderRegistry {
    host: Arc<dyn ActorInvoker>,
    instances: RwLock<BTreeMap<String, Instance>>,
    routes: RwLock<HashMap<RouteKey, Route>>,
}

impl std::fmt::Debug for ProviderRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let instances = read(&self.instances);
        f.debug_struct("ProviderRegistry")
            .field("instances", &instances.keys().collect::<Vec<_>>())
            .field("links", &read(&self.routes).len())
            .finish()
    }
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|e| e.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|e| e.into_inner())
}

impl ProviderRegistry {
    /// An empty registry whose providers deliver to actors through `host`.
    pub fn new(host: Arc<dyn ActorInvoker>) -> Self {
        ProviderRegistry {
            host,
            instances: RwLock::new(BTreeMap::new()),
            routes: RwLock::new(HashMap::new()),
        }
    }

    /// Starts `provider` and registers it as `name`.
    pub async fn add_provider(
        &self,
        name: &str,
        provider: Arc<dyn Provider>,
    ) -> Result<(), LinkError> {
        if read(&self.instances).contains_key(name) {
            return Err(LinkError::DuplicateProvider(name.to_string()));
        }
        provider
            .start(self.host.clone())
            .await
            .map_err(|error| LinkError::Provider {
                provider: name.to_string(),
                error,
            })?;
        tracing::info!(
            provider = name,
            kind = provider.kind(),
            contract = provider.contract_id(),
            "provider started"
        );
        write(&self.instances).insert(name.to_string(), Instance { provider });
        Ok(())
    }

    /// The names of the provider instances.
    pub fn provider_names(&self) -> Vec<String> {
        read(&self.instances).keys().cloned().collect()
    }

    /// Binds `actor` to a provider as `definition` says. The actor's claims must grant the
    /// contract, the instance must serve it, and the provider must accept the config.
    pub async fn add_link(
        &self,
        actor: Arc<ActorIdentity>,
        definition: &LinkDefinition,
    ) -> Result<(), LinkError> {
        let (key, link, provider) = self.prepare_link(actor, definition)?;
        provider
            .link_added(&link)
            .await
            .map_err(|error| LinkError::Provider {
                provider: definition.provider.clone(),
                error,
            })?;
        let previous = write(&self.routes).insert(
            key,
            Route {
                link: link.clone(),
                provider: provider.clone(),
            },
        );
        if let Some(previous) = previous {
            // Two concurrent adds of the same link: keep the last, retire the other.
            previous.provider.link_removed(&previous.link).await;
        }
        tracing::info!(
            actor = %link.actor.name,
            contract = %link.contract_id,
            link = %link.link_name,
            provider = %link.provider,
            "link added"
        );
        Ok(())
    }

    /// Checks a link as [`ProviderRegistry::add_link`] would (the instance, the contract, the
    /// claims, the provider's settings) without applying it.
    pub async fn check_link(
        &self,
        actor: Arc<ActorIdentity>,
        definition: &LinkDefinition,
    ) -> Result<(), LinkError> {
        let (_, link, provider) = self.prepare_link(actor, definition)?;
        provider
            .check_link(&link)
            .await
            .map_err(|error| LinkError::Provider {
                provider: definition.provider.clone(),
                error,
            })
    }

    /// The route, link and provider of a new link, after the checks that need no
    /// provider call.
    #[allow(clippy::type_complexity)]
    fn prepare_link(
        &self,
        actor: Arc<ActorIdentity>,
        definition: &LinkDefinition,
    ) -> Result<(RouteKey, Arc<Link>, Arc<dyn Provider>), LinkError> {
        let who = actor.describe();
        let contract_id = definition.contract_id.clone();
        let provider = {
            let instances = read(&self.instances);
            match instances.get(&definition.provider) {
                Some(i) => i.provider.clone(),
                None => {
                    return Err(LinkError::UnknownProvider {
                        actor: who,
                        contract_id,
                        provider: definition.provider.clone(),
                        known: if instances.is_empty() {
                            "none".to_string()
                        } else {
                            instances.keys().cloned().collect::<Vec<_>>().join(", ")
                        },
                    });
                }
            }
        };
        if provider.contract_id() != contract_id {
            return Err(LinkError::WrongContract {
                actor: who,
                contract_id,
                provider: definition.provider.clone(),
                serves: provider.contract_id().to_string(),
            });
        }
        if !actor.has_capability(&contract_id) {
            return Err(LinkError::NotClaimed {
                actor: who,
                contract_id,
            });
        }
        let key = RouteKey {
            actor: actor.subject.clone(),
            contract_id: contract_id.clone(),
            link_name: definition.link_name.clone(),
        };
        if read(&self.routes).contains_key(&key) {
            return Err(LinkError::Duplicate {
                actor: who,
                contract_id,
                link_name: definition.link_name.clone(),
            });
        }
        let link = Arc::new(Link {
            actor,
            contract_id,
            link_name: definition.link_name.clone(),
            provider: definition.provider.clone(),
            config: definition.config.clone(),
        });
        Ok((key, link, provider))
    }

    /// Removes the link `link_name` of the actor with public key `actor` to `contract_id`.
    pub async fn remove_link(
        &self,
        actor: &str,
        contract_id: &str,
        link_name: &str,
    ) -> Result<Link, LinkError> {
        let key = RouteKey {
            actor: actor.to_string(),
            contract_id: contract_id.to_string(),
            link_name: link_name.to_string(),
        };
        let route = write(&self.routes)
            .remove(&key)
            .ok_or_else(|| LinkError::NoSuchLink {
                actor: actor.to_string(),
                contract_id: contract_id.to_string(),
                link_name: link_name.to_string(),
            })?;
        route.provider.link_removed(&route.link).await;
        tracing::info!(
            actor = %route.link.actor.name,
            contract = contract_id,
            link = link_name,
            "link removed"
        );
        Ok((*route.link).clone())
    }

    /// Removes every link of the actor with public key `actor` (when it is unloaded).
    pub async fn remove_actor_links(&self, actor: &str) -> Vec<Link> {
        let routes: Vec<Route> = {
            let mut all = write(&self.routes);
            let keys: Vec<RouteKey> = all.keys().filter(|k| k.actor == actor).cloned().collect();
            keys.iter().filter_map(|k| all.remove(k)).collect()
        };
        let mut removed = Vec::with_capacity(routes.len());
        for route in routes {
            route.provider.link_removed(&route.link).await;
            removed.push((*route.link).clone());
        }
        removed
    }

    /// Every link, sorted by actor name, contract and link name.
    pub fn links(&self) -> Vec<Link> {
        let mut links: Vec<Link> = read(&self.routes)
            .values()
            .map(|r| (*r.link).clone())
            .collect();
        links.sort_by(|a, b| {
            (&a.actor.name, &a.contract_id, &a.link_name).cmp(&(
                &b.actor.name,
                &b.contract_id,
                &b.link_name,
            ))
        });
        links
    }

    /// Routes one call of `actor` to the provider linked for `contract_id` under
    /// `link_name`, and waits for it no longer than `deadline`.
    pub async fn invoke(
        &self,
        actor: &ActorIdentity,
        contract_id: &str,
        link_name: &str,
        operation: &str,
        payload: &[u8],
        deadline: Instant,
    ) -> Result<Vec<u8>, ProviderError> {
        let route = {
            let routes = read(&self.routes);
            routes
                .get(&RouteKey {
                    actor: actor.subject.clone(),
                    contract_id: contract_id.to_string(),
                    link_name: link_name.to_string(),
                })
                .cloned()
        };
        let Some(route) = route else {
            return Err(ProviderError::NotLinked {
                actor: actor.describe(),
                contract_id: contract_id.to_string(),
                link_name: link_name.to_string(),
            });
        };
        let started = Instant::now();
        let call = Invocation {
            actor,
            link_name,
            operation,
            payload,
            deadline,
        };
        match tokio::time::timeout_at(deadline.into(), route.provider.invoke(call)).await {
            Ok(result) => result,
            Err(_) => Err(ProviderError::Timeout {
                contract_id: contract_id.to_string(),
                operation: operation.to_string(),
                elapsed: started.elapsed(),
            }),
        }
    }

    /// The health of every provider instance.
    pub async fn status(&self) -> Vec<ProviderStatus> {
        let instances: Vec<(String, Arc<dyn Provider>)> = read(&self.instances)
            .iter()
            .map(|(n, i)| (n.clone(), i.provider.clone()))
            .collect();
        let mut out = Vec::with_capacity(instances.len());
        for (name, provider) in instances {
            let links = read(&self.routes)
                .values()
                .filter(|r| r.link.provider == name)
                .count();
            out.push(ProviderStatus {
                health: provider.health().await,
                kind: provider.kind(),
                contract_id: provider.contract_id(),
                name,
                links,
            });
        }
        out
    }

    /// Asks every provider to stop bringing work in (see [`Provider::quiesce`]) and waits
    /// until they have; calls from actors are still served.
    pub async fn quiesce(&self) {
        let instances: Vec<(String, Arc<dyn Provider>)> = read(&self.instances)
            .iter()
            .map(|(n, i)| (n.clone(), i.provider.clone()))
            .collect();
        futures::future::join_all(instances.iter().map(|(name, provider)| async move {
            provider.quiesce().await;
            tracing::debug!(provider = %name, "provider quiesced");
        }))
        .await;
    }

    /// Removes every link, then stops every provider.
    pub async fn shutdown(&self) {
        let routes: Vec<Route> = write(&self.routes).drain().map(|(_, r)| r).collect();
        for route in routes {
            route.provider.link_removed(&route.link).await;
        }
        let instances: Vec<(String, Instance)> = std::mem::take(&mut *write(&self.instances))
            .into_iter()
            .collect();
        for (name, instance) in instances {
            instance.provider.stop().await;
            tracing::info!(provider = %name, "provider stopped");
        }
    }
}
