//! The built-in provider kinds a configuration can name.

use std::sync::Arc;

use sigil_providers::blobstore::BlobStore;
use sigil_providers::httpclient::HttpClient;
use sigil_providers::httpserver::HttpServer;
use sigil_providers::keyvalue::{MemoryKeyValue, RedisKeyValue};
use sigil_providers::messaging::{Bus, BusMessaging, NatsMessaging};
use sigil_providers::plugin::{Lattice, RemoteProvider};
use sigil_providers::{LinkConfig, Provider, ProviderError};

/// What built-in providers of one host share: the in-process message bus, and the
/// lattice that `plugin` instances are reached on.
#[derive(Debug, Clone, Default)]
pub struct Builtins {
    /// The bus `messaging-bus` instances publish on.
    pub bus: Bus,
    /// The lattice, when the host joins one.
    pub lattice: Option<Lattice>,
}

/// Creates a built-in provider of `kind` (one of [`super::config::PROVIDER_KINDS`]).
pub fn create_provider(
    kind: &str,
    config: &LinkConfig,
    builtins: &Builtins,
) -> Result<Arc<dyn Provider>, ProviderError> {
    Ok(match kind {
        "keyvalue-memory" => Arc::new(MemoryKeyValue::from_config(config)?),
        "keyvalue-redis" => Arc::new(RedisKeyValue::from_config(config)?),
        "messaging-bus" => Arc::new(BusMessaging::with_bus(builtins.bus.clone(), config)?),
        "messaging-nats" => Arc::new(NatsMessaging::from_config(config)?),
        "blobstore-fs" => Arc::new(BlobStore::fs_from_config(config)?),
        "blobstore-s3" => Arc::new(BlobStore::s3_from_config(config)?),
        "httpserver" => Arc::new(HttpServer::from_config(config)?),
        "httpclient" => Arc::new(HttpClient::from_config(config)?),
        "plugin" => {
            let lattice = builtins.lattice.clone().ok_or_else(|| {
                ProviderError::Config("a plugin provider needs a [lattice] section".into())
            })?;
            Arc::new(RemoteProvider::from_config(lattice, config)?)
        }
        other => {
            return Err(ProviderError::Config(format!(
                "unknown provider kind {other:?}; use one of {}",
                super::config::PROVIDER_KINDS.join(", ")
            )));
        }
    })
}
