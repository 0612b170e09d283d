//! Sigil's capability providers: the only way an actor reaches the world.
//!
//! A provider serves one capability contract (`wasmcloud:keyvalue`, ...) to the actors
//! linked to it. A [`LinkDefinition`] binds an actor, a contract and a link name to a
//! provider instance with per-link configuration; the [`ProviderRegistry`] routes each call
//! that passed the host's capability gate to the linked instance. Providers act as secure
//! proxies: every call carries the caller's [`ActorIdentity`], and each provider scopes
//! what it does to that actor and to its link's configuration (key prefixes, object roots,
//! subject and host allowlists).
//!
//! The built-in providers each have an embedded backend, so that one machine needs no
//! server, and a real one: key-value in memory or on Redis, messaging on an in-process bus
//! or on NATS, blobs on the local filesystem or S3, and HTTP server and client.

pub mod blobstore;
mod error;
pub mod httpclient;
pub mod httpserver;
mod identity;
pub mod keyvalue;
mod link;
pub mod messaging;
pub mod plugin;
mod provider;
mod registry;
pub mod subject;

pub use error::ProviderError;
pub use identity::ActorIdentity;
pub use link::{
    DEFAULT_LINK_NAME, Link, LinkConfig, LinkDefinition, LinkKey, LinkTable, parse_duration,
    parse_size,
};
pub use provider::{ActorInvoker, Health, Invocation, NoActors, Provider, encode};
pub use registry::{LinkError, ProviderRegistry, ProviderStatus};
