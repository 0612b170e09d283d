//! The messaging provider on a NATS server.

use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::connection::State;
use async_nats::{
    Client, ConnectOptions, Event, PublishErrorKind, RequestErrorKind, ServerAddr,
    SubscribeErrorKind,
};
use async_trait::async_trait;
use futures::StreamExt;
use sigil_actor::contracts::messaging::{CONTRACT_ID, Message};
use tokio::sync::OnceCell;

use super::{MessageStream, Messaging, SendError, Transport, request_timeout};
use crate::{ActorInvoker, Health, Invocation, Link, LinkConfig, Provider, ProviderError};

/// The default of `url`.
const DEFAULT_URL: &str = "nats://127.0.0.1:4222";
/// The default of `connect_timeout`.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// The longest pause between two reconnection attempts.
const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(2);

struct NatsTransport {
    url: String,
    /// `host:port` (no credentials), for messages.
    address: String,
    connect_timeout: Duration,
    request_timeout: Duration,
    /// Created on first use (it needs the runtime); it then reconnects on its own.
    client: OnceCell<Client>,
}

impl NatsTransport {
    async fn client(&self) -> Result<&Client, SendError> {
        self.client
            .get_or_try_init(|| async {
                let address = self.address.clone();
                let client = ConnectOptions::new()
                    .retry_on_initial_connect()
                    .max_reconnects(None)
                    .connection_timeout(self.connect_timeout)
                    .request_timeout(Some(self.request_timeout))
                    .reconnect_delay_callback(|attempts| {
                        let attempts = u32::try_from(attempts).unwrap_or(u32::MAX);
                        (Duration::from_millis(100) * attempts.saturating_sub(1))
                            .min(MAX_RECONNECT_DELAY)
                    })
                    .event_callback(move |event| {
                        let address = address.clone();
                        async move {
                            match event {
                                Event::Connected => tracing::info!(%address, "NATS connected"),
                                Event::Disconnected => {
                                    tracing::warn!(%address, "NATS disconnected; reconnecting")
                                }
                                other => tracing::debug!(%address, event = %other, "NATS event"),
                            }
                        }
                    })
                    .connect(self.url.as_str())
                    .await
                    .map_err(|e| {
                        SendError::Unavailable(format!(
                            "cannot set up the NATS client for {}: {e}",
                            self.address
                        ))
                    })?;
                // Give the first connection its connect timeout, so that calls made right
                // after the start find it up; a server that is down does not stop the
                // start, the client keeps trying in the background.
                let started = Instant::now();
                while client.connection_state() != State::Connected
                    && started.elapsed() < self.connect_timeout
                {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                if client.connection_state() != State::Connected {
                    tracing::warn!(
                        address = %self.address,
                        "NATS is not reachable; starting anyway, calls fail until it is"
                    );
                }
                Ok(client)
            })
            .await
    }

    /// The client, if it is connected now.
    async fn connected(&self) -> Result<&Client, SendError> {
        let client = self.client().await?;
        match client.connection_state() {
            State::Connected => Ok(client),
            state => Err(SendError::Unavailable(format!(
                "NATS at {} is not connected ({state}); the client reconnects as soon as the \
                 server is reachable",
                self.address
            ))),
        }
    }
}

fn message(m: async_nats::Message) -> Message {
    Message {
        subject: m.subject.to_string(),
        reply_to: m.reply.map(|r| r.to_string()),
        body: m.payload.to_vec(),
    }
}

#[async_trait]
impl Transport for NatsTransport {
    async fn connect(&self) -> Result<(), SendError> {
        self.client().await.map(|_| ())
    }

    async fn publish(
        &self,
        subject: &str,
        reply_to: Option<&str>,
        body: Vec<u8>,
        within: Duration,
    ) -> Result<(), SendError> {
        let client = self.connected().await?;
        let send = async {
            let sent = match reply_to {
                Some(reply_to) => {
                    client
                        .publish_with_reply(subject.to_string(), reply_to.to_string(), body.into())
                        .await
                }
                None => client.publish(subject.to_string(), body.into()).await,
            };
            sent.map_err(|e| match e.kind() {
                PublishErrorKind::MaxPayloadExceeded | PublishErrorKind::InvalidSubject => {
                    SendError::Invalid(e.to_string())
                }
                PublishErrorKind::Send => {
                    SendError::Unavailable(format!("NATS at {}: {e}", self.address))
                }
            })?;
            client
                .flush()
                .await
                .map_err(|e| SendError::Unavailable(format!("NATS at {}: {e}", self.address)))
        };
        tokio::time::timeout(within, send).await.map_err(|_| {
            SendError::Unavailable(format!(
                "NATS at {} did not confirm the publish within {within:?}",
                self.address
            ))
        })?
    }

    async fn request(
        &self,
        subject: &str,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<Message, SendError> {
        let client = self.connected().await?;
        let request = async_nats::Request::new()
            .payload(body.into())
            .timeout(Some(timeout));
        // The client's own timeout counts from when the request is queued; this one also
        // bounds the queueing.
        let reply = tokio::time::timeout(
            timeout.saturating_add(Duration::from_millis(100)),
            client.send_request(subject.to_string(), request),
        )
        .await
        .map_err(|_| SendError::TimedOut(timeout))?;
        match reply {
            Ok(reply) => Ok(message(reply)),
            Err(e) => Err(match e.kind() {
                RequestErrorKind::NoResponders => SendError::NoResponders,
                RequestErrorKind::TimedOut => SendError::TimedOut(timeout),
                RequestErrorKind::InvalidSubject | RequestErrorKind::MaxPayloadExceeded => {
                    SendError::Invalid(e.to_string())
                }
                RequestErrorKind::Other => {
                    SendError::Unavailable(format!("NATS at {}: {e}", self.address))
                }
            }),
        }
    }

    async fn subscribe(
        &self,
        pattern: &str,
        queue: Option<&str>,
    ) -> Result<MessageStream, SendError> {
        let client = self.client().await?;
        let subscribe = async {
            match queue {
                Some(queue) => {
                    client
                        .queue_subscribe(pattern.to_string(), queue.to_string())
                        .await
                }
                None => client.subscribe(pattern.to_string()).await,
            }
        };
        let subscriber = tokio::time::timeout(self.connect_timeout, subscribe)
            .await
            .map_err(|_| {
                SendError::Unavailable(format!(
                    "NATS at {}: the client did not take the subscription within {:?}",
                    self.address, self.connect_timeout
                ))
            })?
            .map_err(|e| match e.kind() {
                SubscribeErrorKind::InvalidSubject | SubscribeErrorKind::InvalidQueueName => {
                    SendError::Invalid(e.to_string())
                }
                SubscribeErrorKind::Other => {
                    SendError::Unavailable(format!("NATS at {}: {e}", self.address))
                }
            })?;
        // Once the server has the subscription, messages from other connections reach it.
        // While the server is away there is nothing to wait for: the client holds the
        // subscription and makes it again when it reconnects.
        if client.connection_state() == State::Connected
            && let Err(e) = crate::plugin::wire::settle(client).await
        {
            tracing::warn!(address = %self.address, subject = pattern, error = %e, "NATS: subscription not confirmed yet");
        }
        Ok(subscriber.map(message).boxed())
    }

    async fn health(&self) -> Health {
        match self.connected().await {
            Ok(_) => Health::Healthy,
            Err(SendError::Unavailable(why)) => Health::Unhealthy(why),
            Err(other) => Health::Unhealthy(format!("NATS at {}: {other:?}", self.address)),
        }
    }

    async fn close(&self) {
        // Drain (flush, then close) takes a command slot; a client stuck offline with a
        // full queue is simply dropped.
        if let Some(client) = self.client.get()
            && let Ok(Err(error)) =
                tokio::time::timeout(Duration::from_secs(2), client.drain()).await
        {
            tracing::debug!(address = %self.address, %error, "NATS: closing the connection");
        }
    }

    async fn flush(&self, within: Duration) {
        if let Ok(client) = self.connected().await
            && tokio::time::timeout(within, client.flush()).await.is_err()
        {
            tracing::warn!(address = %self.address, "NATS: could not flush within {within:?}");
        }
    }
}

/// A `wasmcloud:messaging` provider on a NATS server, reconnecting on its own.
pub struct NatsMessaging {
    core: Messaging<NatsTransport>,
}

impl std::fmt::Debug for NatsMessaging {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsMessaging")
            .field("address", &self.core.transport.address)
            .field("links", &self.core.links.len())
            .finish()
    }
}

impl NatsMessaging {
    /// Reads the provider config: `url` (default `nats://127.0.0.1:4222`),
    /// `connect_timeout` (default `2s`) and `request_timeout` (default `5s`). Connects in
    /// [`start`](Provider::start) (or on first use), in the background.
    pub fn from_config(config: &LinkConfig) -> Result<Self, ProviderError> {
        config.only(&["url", "connect_timeout", "request_timeout"])?;
        let url = config.get("url").unwrap_or(DEFAULT_URL).to_string();
        let server = ServerAddr::from_str(&url).map_err(|e| {
            ProviderError::Config(format!(
                "`url` is not a NATS URL ({e}); write it like {DEFAULT_URL}"
            ))
        })?;
        let connect_timeout =
            super::timeout_setting(config, "connect_timeout", DEFAULT_CONNECT_TIMEOUT)?;
        let request_timeout = request_timeout(config)?;
        let transport = NatsTransport {
            url,
            address: format!("{}:{}", server.host(), server.port()),
            connect_timeout,
            request_timeout,
            client: OnceCell::new(),
        };
        Ok(NatsMessaging {
            core: Messaging::new(transport, request_timeout),
        })
    }

    /// The server's address, `host:port`.
    pub fn address(&self) -> &str {
        &self.core.transport.address
    }
}

#[async_trait]
impl Provider for NatsMessaging {
    fn contract_id(&self) -> &'static str {
        CONTRACT_ID
    }

    fn kind(&self) -> &'static str {
        "nats"
    }

    async fn start(&self, host: Arc<dyn ActorInvoker>) -> Result<(), ProviderError> {
        self.core.start(host).await
    }

    async fn link_added(&self, link: &Link) -> Result<(), ProviderError> {
        self.core.link_added(link).await
    }

    async fn check_link(&self, link: &Link) -> Result<(), ProviderError> {
        self.core.check_link(link)
    }

    async fn link_removed(&self, link: &Link) {
        self.core.link_removed(link).await;
    }

    async fn invoke(&self, call: Invocation<'_>) -> Result<Vec<u8>, ProviderError> {
        self.core.invoke(call).await
    }

    async fn health(&self) -> Health {
        self.core.transport.health().await
    }

    async fn quiesce(&self) {
        self.core.quiesce().await;
    }

    async fn stop(&self) {
        self.core.stop().await;
    }
}
