//! The Sigil actor host.
//!
//! A module goes in only through verification of its signed claims; what comes out is an
//! [`Actor`] that runs in wasmtime behind the waPC protocol, one fresh instance per
//! invocation, within deadline, fuel and memory limits, reaching the world only through the
//! capabilities its claims grant.
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use sigil_host::Host;
//!
//! let host = Host::builder().build()?;
//! let actor = host.load_actor(std::fs::read("echo.wasm")?)?;
//! let reply = host.invoke(&actor, "echo", b"hello")?;
//! assert_eq!(reply, b"hello");
//! # Ok(()) }
//! ```
//!
//! The pieces, each knowing as little as it can: [`engine`] (wasmtime and the waPC ABI;
//! bytes and a host-call handler, nothing of claims), [`actors`] (verification, then the
//! engine), [`dispatch`] (the capability gate, built-in capabilities, the provider seam),
//! [`policy`] (what this deployment allows on top of the claims: Rego files or a decision
//! service) and [`build`] (building and signing actor crates).

pub mod actors;
pub mod build;
pub mod dispatch;
pub mod engine;
mod host;
pub mod oci;
pub mod policy;
pub mod telemetry;
pub mod up;
pub mod wasi;
pub mod workflow;

pub use actors::Actor;
pub use dispatch::{
    ActorIdentity, CapabilityGate, NoProviders, ProviderDispatch, RegistryDispatch,
};
pub use engine::{
    Engine, EngineConfig, HostCall, HostCallFuture, HostCallHandler, InvocationError, Limits,
    LoadError,
};
pub use host::{Host, HostBuilder};
