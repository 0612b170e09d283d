//! Provider plugins: capability providers that run as their own processes, in any language,
//! and serve hosts over NATS.
//!
//! A plugin proves who it is with provider claims (a token for its service key `V...`,
//! signed by an issuer account the host allows) and a challenge signed with that key. The
//! host then sends it links and actors' calls, each in an envelope signed by the host's
//! cluster key that names the calling actor, the link, the operation and a hash of the
//! body; the plugin refuses anything forged, altered, expired, replayed or meant for
//! another plugin, and signs every answer. The wire format is in `docs/provider-plugins.md`.
//!
//! - [`serve`] runs any [`crate::Provider`] as a plugin (the SDK);
//! - [`RemoteProvider`] is the host's side: a provider that forwards to a plugin.

mod remote;
mod serve;
pub mod wire;

pub use remote::{Lattice, PLUGIN_CONFIG_KEYS, RemoteProvider};
pub use serve::{PluginConfig, serve, serve_until};
