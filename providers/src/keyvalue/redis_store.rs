//! The Redis key-value backend.

use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Cmd, ErrorKind, FromRedisValue, RedisError, ServerErrorKind};
use sigil_actor::contracts::keyvalue as kv;

use super::{Backend, KvError, Scope, dispatch};
use crate::{Health, Invocation, Link, LinkConfig, LinkTable, Provider, ProviderError};

/// The default of `url`.
const DEFAULT_URL: &str = "redis://127.0.0.1:6379";
/// The default of `connect_timeout` and `response_timeout`.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);

/// A `wasmcloud:keyvalue` provider backed by a Redis server, reconnecting on its own.
#[derive(Debug)]
pub struct RedisKeyValue {
    links: LinkTable<Scope>,
    client: redis::Client,
    /// `host:port` of the server (no credentials), for messages.
    address: String,
    connect_timeout: Duration,
    response_timeout: Duration,
    /// Created on first use (it needs the runtime); replaced when the server stops
    /// answering without closing the connection.
    manager: Mutex<Option<ConnectionManager>>,
}

impl RedisKeyValue {
    /// Reads the provider config: `url` (default `redis://127.0.0.1:6379`),
    /// `connect_timeout` and `response_timeout` (default `2s` each). Does not connect.
    pub fn from_config(config: &LinkConfig) -> Result<Self, ProviderError> {
        config.only(&["url", "connect_timeout", "response_timeout"])?;
        let url = config.get("url").unwrap_or(DEFAULT_URL);
        let client = redis::Client::open(url).map_err(|e| {
            ProviderError::Config(format!(
                "`url` is not a Redis URL ({e}); write it like {DEFAULT_URL}"
            ))
        })?;
        let connect_timeout = positive(config, "connect_timeout")?;
        let response_timeout = positive(config, "response_timeout")?;
        let address = client.get_connection_info().addr().to_string();
        Ok(RedisKeyValue {
            links: LinkTable::new(kv::CONTRACT_ID),
            client,
            address,
            connect_timeout,
            response_timeout,
            manager: Mutex::new(None),
        })
    }

    /// The server's address, `host:port`.
    pub fn address(&self) -> &str {
        &self.address
    }

    fn slot(&self) -> MutexGuard<'_, Option<ConnectionManager>> {
        self.manager.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The connection manager, created lazily: it connects on first use and reconnects
    /// after the connection drops.
    fn connection(&self) -> Result<ConnectionManager, KvError> {
        let mut slot = self.slot();
        if let Some(manager) = slot.as_ref() {
            return Ok(manager.clone());
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.connect_timeout))
            .set_response_timeout(Some(self.response_timeout))
            // One attempt per call: while the server is down a call fails at once rather
            // than waiting through a backoff; the next call tries again.
            .set_number_of_retries(0)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(500));
        let manager = ConnectionManager::new_lazy_with_config(self.client.clone(), config)
            .map_err(|e| self.unreachable(&e))?;
        *slot = Some(manager.clone());
        Ok(manager)
    }

    /// Drops the connection manager, so that the next call connects afresh.
    fn reset(&self) {
        self.slot().take();
    }

    fn unreachable(&self, error: &dyn std::fmt::Display) -> KvError {
        KvError::Unavailable(format!(
            "redis at {} is unreachable: {error}; calls will work again once it is back",
            self.address
        ))
    }

    /// Runs one command within the connect and response timeouts.
    async fn run<T: FromRedisValue>(&self, cmd: &Cmd) -> Result<T, KvError> {
        let bound = self.connect_timeout.saturating_add(self.response_timeout);
        let mut refused_once = false;
        loop {
            let mut connection = self.connection()?;
            match tokio::time::timeout(bound, cmd.query_async::<T>(&mut connection)).await {
                Ok(Ok(value)) => return Ok(value),
                // Refused before the command was sent (the server just came back while
                // the last reconnection attempt failed): one more attempt is safe.
                Ok(Err(e)) if e.is_connection_refusal() && !refused_once => {
                    refused_once = true;
                }
                Ok(Err(e)) => {
                    if e.is_timeout() {
                        self.reset();
                    }
                    return Err(self.classify(&e));
                }
                Err(_) => {
                    self.reset();
                    return Err(self.unreachable(&format!("no answer within {bound:?}")));
                }
            }
        }
    }

    /// Sorts a Redis error into what the actor is told.
    fn classify(&self, e: &RedisError) -> KvError {
        let detail = e.detail().unwrap_or_default();
        match e.kind() {
            _ if e.code() == Some("WRONGTYPE") => KvError::WrongKind,
            _ if detail.contains("not an integer") => KvError::NotInteger,
            _ if detail.contains("overflow") => KvError::Overflow,
            ErrorKind::Server(
                ServerErrorKind::BusyLoading
                | ServerErrorKind::MasterDown
                | ServerErrorKind::TryAgain
                | ServerErrorKind::ClusterDown,
            ) => self.unreachable(e),
            ErrorKind::Server(_) | ErrorKind::Extension => KvError::Failed(format!(
                "redis at {} refused the command: {e}",
                self.address
            )),
            _ => self.unreachable(e),
        }
    }
}

fn positive(config: &LinkConfig, key: &str) -> Result<Duration, ProviderError> {
    crate::messaging::timeout_setting(config, key, DEFAULT_TIMEOUT)
}

fn cmd(name: &str, key: &str) -> Cmd {
    let mut cmd = redis::cmd(name);
    cmd.arg(key);
    cmd
}

#[async_trait]
impl Backend for RedisKeyValue {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        self.run(&cmd("GET", key)).await
    }

    async fn set(
        &self,
        key: &str,
        value: Vec<u8>,
        ttl_seconds: Option<u32>,
    ) -> Result<(), KvError> {
        let mut c = cmd("SET", key);
        c.arg(value);
        if let Some(ttl) = ttl_seconds {
            c.arg("EX").arg(ttl);
        }
        self.run::<()>(&c).await
    }

    async fn delete(&self, key: &str) -> Result<bool, KvError> {
        Ok(self.run::<u64>(&cmd("DEL", key)).await? > 0)
    }

    async fn exists(&self, key: &str) -> Result<bool, KvError> {
        Ok(self.run::<u64>(&cmd("EXISTS", key)).await? > 0)
    }

    async fn increment(&self, key: &str, delta: i64) -> Result<i64, KvError> {
        let mut c = cmd("INCRBY", key);
        c.arg(delta);
        self.run(&c).await
    }

    async fn list_add(&self, key: &str, value: Vec<u8>) -> Result<u64, KvError> {
        let mut c = cmd("RPUSH", key);
        c.arg(value);
        self.run(&c).await
    }

    async fn list_range(&self, key: &str, start: i64, stop: i64) -> Result<Vec<Vec<u8>>, KvError> {
        let mut c = cmd("LRANGE", key);
        c.arg(start).arg(stop);
        self.run(&c).await
    }

    async fn list_delete(&self, key: &str, value: Vec<u8>) -> Result<u64, KvError> {
        let mut c = cmd("LREM", key);
        c.arg(0).arg(value);
        self.run(&c).await
    }

    async fn set_add(&self, key: &str, value: Vec<u8>) -> Result<bool, KvError> {
        let mut c = cmd("SADD", key);
        c.arg(value);
        Ok(self.run::<u64>(&c).await? > 0)
    }

    async fn set_remove(&self, key: &str, value: Vec<u8>) -> Result<bool, KvError> {
        let mut c = cmd("SREM", key);
        c.arg(value);
        Ok(self.run::<u64>(&c).await? > 0)
    }

    async fn set_members(&self, key: &str) -> Result<Vec<Vec<u8>>, KvError> {
        self.run(&cmd("SMEMBERS", key)).await
    }

    async fn set_contains(&self, key: &str, value: Vec<u8>) -> Result<bool, KvError> {
        let mut c = cmd("SISMEMBER", key);
        c.arg(value);
        Ok(self.run::<u64>(&c).await? > 0)
    }
}

#[async_trait]
impl Provider for RedisKeyValue {
    fn contract_id(&self) -> &'static str {
        kv::CONTRACT_ID
    }

    fn kind(&self) -> &'static str {
        "redis"
    }

    /// Tries the server once, but starts whether or not it answers.
    async fn start(
        &self,
        _host: std::sync::Arc<dyn crate::ActorInvoker>,
    ) -> Result<(), ProviderError> {
        match self.health().await {
            Health::Healthy => {
                tracing::info!(address = %self.address, "redis key-value store reachable")
            }
            Health::Unhealthy(why) => tracing::warn!(
                address = %self.address,
                "{why}; starting anyway, calls fail until it is reachable"
            ),
        }
        Ok(())
    }

    async fn link_added(&self, link: &Link) -> Result<(), ProviderError> {
        super::add_link(&self.links, link)
    }

    async fn check_link(&self, link: &Link) -> Result<(), ProviderError> {
        super::scope_of(link).map(drop)
    }

    async fn link_removed(&self, link: &Link) {
        self.links.remove(link);
    }

    async fn invoke(&self, call: Invocation<'_>) -> Result<Vec<u8>, ProviderError> {
        dispatch(self, &self.links, call).await
    }

    async fn health(&self) -> Health {
        match self.run::<String>(&redis::cmd("PING")).await {
            Ok(_) => Health::Healthy,
            Err(KvError::Unavailable(why) | KvError::Failed(why)) => Health::Unhealthy(why),
            Err(other) => Health::Unhealthy(format!("redis at {}: {other:?}", self.address)),
        }
    }
}
