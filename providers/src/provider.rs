//! The provider model: what a capability provider implements, and what the host gives it.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use serde::de::DeserializeOwned;

use crate::{ActorIdentity, Link, ProviderError};

/// One call from an actor to a provider, after the capability gate has allowed it.
#[derive(Debug, Clone, Copy)]
pub struct Invocation<'a> {
    /// Who is calling (from its verified claims).
    pub actor: &'a ActorIdentity,
    /// The link name the actor called through.
    pub link_name: &'a str,
    /// The operation, e.g. `Get`.
    pub operation: &'a str,
    /// The MessagePack request.
    pub payload: &'a [u8],
    /// When the actor's invocation runs out of time: work past it is wasted.
    pub deadline: Instant,
}

impl Invocation<'_> {
    /// Decodes the payload as the request type of this operation, with an error that names
    /// the operation.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, ProviderError> {
        sigil_actor::contracts::decode(self.payload)
            .map_err(|e| ProviderError::invalid(self.operation, e))
    }
}

/// Encodes a response value as MessagePack (maps keyed by field name).
pub fn encode<T: serde::Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, ProviderError> {
    sigil_actor::contracts::encode(value)
        .map_err(|e| ProviderError::Failed(format!("cannot encode the response: {e}")))
}

/// What a provider reports about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// Serving.
    Healthy,
    /// Not serving now (its backend is down); calls fail with a clear error until it
    /// recovers.
    Unhealthy(String),
}

impl Health {
    /// True when healthy.
    pub fn is_healthy(&self) -> bool {
        matches!(self, Health::Healthy)
    }
}

/// The host, as a provider sees it: the way to deliver something to an actor (an HTTP
/// request, a message on a subscribed subject).
#[async_trait]
pub trait ActorInvoker: Send + Sync + 'static {
    /// Invokes `operation` on the actor with public key `actor`, through its capability
    /// gate and limits. `Err` is a message fit for a log or an HTTP 5xx body.
    async fn invoke_actor(
        &self,
        actor: &str,
        operation: &str,
        payload: Vec<u8>,
    ) -> Result<Vec<u8>, String>;
}

/// An [`ActorInvoker`] with no actors, for providers that are started outside a host
/// (tests, tools): every delivery fails.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoActors;

#[async_trait]
impl ActorInvoker for NoActors {
    async fn invoke_actor(
        &self,
        actor: &str,
        operation: &str,
        _: Vec<u8>,
    ) -> Result<Vec<u8>, String> {
        Err(format!("no actor {actor} to deliver {operation} to"))
    }
}

/// A capability provider: serves one contract to linked actors.
///
/// The host calls [`start`](Provider::start) once, then [`link_added`](Provider::link_added)
/// and [`link_removed`](Provider::link_removed) as links come and go (while it runs, too),
/// [`invoke`](Provider::invoke) for each call an actor makes through a link, and
/// [`stop`](Provider::stop) at shutdown. The host has already checked the actor's claims
/// for the contract and that the link exists; the provider scopes every call to the actor
/// and to the link's configuration.
#[async_trait]
pub trait Provider: Send + Sync + 'static {
    /// The contract ID served, e.g. `wasmcloud:keyvalue`.
    fn contract_id(&self) -> &'static str;

    /// A short name of the implementation, e.g. `redis`, for logs and metrics.
    fn kind(&self) -> &'static str;

    /// Starts the provider; `host` delivers to actors.
    async fn start(&self, host: Arc<dyn ActorInvoker>) -> Result<(), ProviderError> {
        let _ = host;
        Ok(())
    }

    /// Validates and applies a new link. An error refuses the link and names what is wrong
    /// with its configuration.
    async fn link_added(&self, link: &Link) -> Result<(), ProviderError>;

    /// Checks a link's configuration as [`Provider::link_added`] would, without applying
    /// it: nothing is bound, subscribed or remembered (`sigil up --check`). The default
    /// accepts every link, for providers whose settings are checked elsewhere.
    async fn check_link(&self, link: &Link) -> Result<(), ProviderError> {
        let _ = link;
        Ok(())
    }

    /// Forgets a link: its subscriptions stop, its listeners close.
    async fn link_removed(&self, link: &Link);

    /// Serves one call.
    async fn invoke(&self, call: Invocation<'_>) -> Result<Vec<u8>, ProviderError>;

    /// Reports whether the provider can serve now.
    async fn health(&self) -> Health {
        Health::Healthy
    }

    /// Stops bringing work in from outside (closes listeners, unsubscribes) and waits for
    /// the deliveries in flight to finish, while still serving actors' calls: the first
    /// step of a graceful shutdown. Providers that only answer calls need not implement it.
    async fn quiesce(&self) {}

    /// Stops the provider: no new work is accepted. Called once, after the host has
    /// drained in-flight invocations.
    async fn stop(&self) {}
}
