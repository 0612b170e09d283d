//! The in-process message bus, and the messaging provider on it.

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, Hasher};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::{Stream, StreamExt};
use sigil_actor::contracts::messaging::{CONTRACT_ID, Message};
use tokio::sync::mpsc;

use super::{MessageStream, Messaging, SendError, Transport, request_timeout, valid_queue_group};
use crate::subject::{matches, validate_pattern, validate_subject};
use crate::{ActorInvoker, Health, Invocation, Link, LinkConfig, Provider, ProviderError};

/// How many messages a subscription buffers before the bus drops new ones for it (a slow
/// consumer, as NATS calls it).
const SUBSCRIPTION_CAPACITY: usize = 4096;

/// A message on the [`Bus`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BusMessage {
    /// The subject it was published on.
    pub subject: String,
    /// Where the sender waits for a reply, if it asked for one.
    pub reply_to: Option<String>,
    /// The payload.
    pub body: Bytes,
}

impl From<BusMessage> for Message {
    fn from(m: BusMessage) -> Message {
        Message {
            subject: m.subject,
            reply_to: m.reply_to,
            body: m.body.to_vec(),
        }
    }
}

/// Why the bus refused a publish, subscription or request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BusError {
    /// A subject, pattern or queue group name is not valid.
    #[error("{0}")]
    Invalid(String),
    /// A request found no subscriber.
    #[error("no responders on `{0}`: nobody subscribes to it")]
    NoResponders(String),
    /// A request got no reply in time.
    #[error("no reply on `{subject}` within {timeout:?}")]
    TimedOut {
        /// The request's subject.
        subject: String,
        /// How long it waited.
        timeout: Duration,
    },
}

struct Sub {
    pattern: String,
    queue: Option<String>,
    sender: mpsc::Sender<BusMessage>,
}

#[derive(Default)]
struct BusInner {
    subs: RwLock<BTreeMap<u64, Sub>>,
    next_id: AtomicU64,
    next_pick: AtomicU64,
    next_inbox: AtomicU64,
    inbox_seed: u64,
}

/// An in-process publish-subscribe bus with NATS semantics: `*` and `>` wildcards, queue
/// groups (one member of each group gets a message), and request-reply. Clones share the
/// same bus.
#[derive(Clone)]
pub struct Bus {
    inner: Arc<BusInner>,
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bus")
            .field("subscriptions", &self.subscriptions())
            .finish()
    }
}

impl Default for Bus {
    fn default() -> Self {
        Bus::new()
    }
}

impl Bus {
    /// An empty bus.
    pub fn new() -> Self {
        let seed = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        Bus {
            inner: Arc::new(BusInner {
                inbox_seed: seed,
                ..BusInner::default()
            }),
        }
    }

    /// How many subscriptions are open.
    pub fn subscriptions(&self) -> usize {
        self.inner
            .subs
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    /// A fresh, unique reply subject (`_INBOX.…`).
    pub fn new_inbox(&self) -> String {
        let n = self.inner.next_inbox.fetch_add(1, Ordering::Relaxed);
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        hasher.write_u64(self.inner.inbox_seed);
        hasher.write_u64(n);
        format!("_INBOX.{:016x}{n:x}", hasher.finish())
    }

    /// Publishes a message to every matching subscription (one member per queue group);
    /// returns how many received it. A subscription whose buffer is full misses it.
    pub fn publish(
        &self,
        subject: &str,
        reply_to: Option<&str>,
        body: impl Into<Bytes>,
    ) -> Result<usize, BusError> {
        validate_subject(subject).map_err(BusError::Invalid)?;
        if let Some(reply_to) = reply_to {
            validate_subject(reply_to).map_err(|e| BusError::Invalid(format!("reply_to: {e}")))?;
        }
        let message = BusMessage {
            subject: subject.to_string(),
            reply_to: reply_to.map(str::to_string),
            body: body.into(),
        };
        let subs = self.inner.subs.read().unwrap_or_else(|e| e.into_inner());
        let mut delivered = 0;
        let mut groups: HashMap<&str, Vec<&Sub>> = HashMap::new();
        for sub in subs.values().filter(|s| matches(&s.pattern, subject)) {
            match &sub.queue {
                Some(queue) => groups.entry(queue.as_str()).or_default().push(sub),
                None => delivered += usize::from(offer(sub, &message)),
            }
        }
        for members in groups.values() {
            // One member per group, in turn; a member that cannot take it passes it on.
            let first = self.inner.next_pick.fetch_add(1, Ordering::Relaxed);
            let count = members.len();
            let start = usize::try_from(first).unwrap_or_default() % count;
            if (0..count).any(|i| offer(members[(start + i) % count], &message)) {
                delivered += 1;
            }
        }
        Ok(delivered)
    }

    /// Subscribes to `pattern` (wildcards allowed), in the queue group `queue` if given.
    /// Dropping the subscription unsubscribes.
    pub fn subscribe(
        &self,
        pattern: &str,
        queue: Option<&str>,
    ) -> Result<BusSubscription, BusError> {
        validate_pattern(pattern).map_err(BusError::Invalid)?;
        if let Some(queue) = queue
            && !valid_queue_group(queue)
        {
            return Err(BusError::Invalid(format!(
                "queue group {queue:?} is not a valid name"
            )));
        }
        let (sender, receiver) = mpsc::channel(SUBSCRIPTION_CAPACITY);
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        self.inner
            .subs
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                id,
                Sub {
                    pattern: pattern.to_string(),
                    queue: queue.map(str::to_string),
                    sender,
                },
            );
        Ok(BusSubscription {
            id,
            receiver,
            bus: Arc::downgrade(&self.inner),
        })
    }

    /// Publishes a request with a fresh reply subject and waits up to `timeout` for the
    /// first reply.
    pub async fn request(
        &self,
        subject: &str,
        body: impl Into<Bytes>,
        timeout: Duration,
    ) -> Result<BusMessage, BusError> {
        let inbox = self.new_inbox();
        let mut replies = self.subscribe(&inbox, None)?;
        if self.publish(subject, Some(&inbox), body)? == 0 {
            return Err(BusError::NoResponders(subject.to_string()));
        }
        match tokio::time::timeout(timeout, replies.next()).await {
            Ok(Some(reply)) => Ok(reply),
            _ => Err(BusError::TimedOut {
                subject: subject.to_string(),
                timeout,
            }),
        }
    }
}

/// Hands `message` to `sub`; whether it took it.
fn offer(sub: &Sub, message: &BusMessage) -> bool {
    match sub.sender.try_send(message.clone()) {
        Ok(()) => true,
        Err(mpsc::error::TrySendError::Full(_)) => {
            tracing::warn!(
                pattern = %sub.pattern,
                subject = %message.subject,
                "bus subscription is not keeping up; message dropped for it"
            );
            false
        }
        Err(mpsc::error::TrySendError::Closed(_)) => false,
    }
}

/// A subscription on the [`Bus`]: a stream of [`BusMessage`]s. Dropping it unsubscribes.
#[derive(Debug)]
pub struct BusSubscription {
    id: u64,
    receiver: mpsc::Receiver<BusMessage>,
    bus: Weak<BusInner>,
}

impl BusSubscription {
    /// The next message; `None` once the bus is gone.
    pub async fn next(&mut self) -> Option<BusMessage> {
        self.receiver.recv().await
    }
}

impl Stream for BusSubscription {
    type Item = BusMessage;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<BusMessage>> {
        self.receiver.poll_recv(cx)
    }
}

impl Drop for BusSubscription {
    fn drop(&mut self) {
        if let Some(bus) = self.bus.upgrade() {
            bus.subs
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&self.id);
        }
    }
}

impl std::fmt::Debug for BusInner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BusInner").finish_non_exhaustive()
    }
}

/// The bus as a messaging transport.
struct BusTransport {
    bus: Bus,
}

#[async_trait]
impl Transport for BusTransport {
    async fn publish(
        &self,
        subject: &str,
        reply_to: Option<&str>,
        body: Vec<u8>,
        _within: Duration,
    ) -> Result<(), SendError> {
        self.bus
            .publish(subject, reply_to, body)
            .map(|_| ())
            .map_err(send_error)
    }

    async fn request(
        &self,
        subject: &str,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<Message, SendError> {
        self.bus
            .request(subject, body, timeout)
            .await
            .map(Message::from)
            .map_err(send_error)
    }

    async fn subscribe(
        &self,
        pattern: &str,
        queue: Option<&str>,
    ) -> Result<MessageStream, SendError> {
        let subscription = self.bus.subscribe(pattern, queue).map_err(send_error)?;
        Ok(subscription.map(Message::from).boxed())
    }

    async fn health(&self) -> Health {
        Health::Healthy
    }
}

fn send_error(error: BusError) -> SendError {
    match error {
        BusError::Invalid(message) => SendError::Invalid(message),
        BusError::NoResponders(_) => SendError::NoResponders,
        BusError::TimedOut { timeout, .. } => SendError::TimedOut(timeout),
    }
}

/// A `wasmcloud:messaging` provider on an in-process [`Bus`].
pub struct BusMessaging {
    core: Messaging<BusTransport>,
}

impl std::fmt::Debug for BusMessaging {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BusMessaging")
            .field("bus", &self.core.transport.bus)
            .field("links", &self.core.links.len())
            .finish()
    }
}

impl BusMessaging {
    /// Reads the provider config (`request_timeout`, default `5s`) and creates a new bus.
    pub fn from_config(config: &LinkConfig) -> Result<Self, ProviderError> {
        Self::with_bus(Bus::new(), config)
    }

    /// Like [`from_config`](Self::from_config), on an existing bus shared with other parts
    /// of the host.
    pub fn with_bus(bus: Bus, config: &LinkConfig) -> Result<Self, ProviderError> {
        config.only(&["request_timeout"])?;
        let timeout = request_timeout(config)?;
        Ok(BusMessaging {
            core: Messaging::new(BusTransport { bus }, timeout),
        })
    }

    /// The bus this provider publishes to and subscribes on.
    pub fn bus(&self) -> &Bus {
        &self.core.transport.bus
    }
}

#[async_trait]
impl Provider for BusMessaging {
    fn contract_id(&self) -> &'static str {
        CONTRACT_ID
    }

    fn kind(&self) -> &'static str {
        "bus"
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn wildcards_queue_groups_and_requests() {
        let bus = Bus::new();
        let mut star = bus.subscribe("a.*", None).unwrap();
        let mut tail = bus.subscribe("a.>", None).unwrap();
        let mut w1 = bus.subscribe("a.>", Some("w")).unwrap();
        let mut w2 = bus.subscribe("a.>", Some("w")).unwrap();
        assert_eq!(bus.publish("a.b", None, "1").unwrap(), 3);
        assert_eq!(bus.publish("a.b.c", None, "2").unwrap(), 2);
        assert_eq!(star.next().await.unwrap().body, "1");
        assert_eq!(tail.next().await.unwrap().body, "1");
        assert_eq!(tail.next().await.unwrap().body, "2");
        let mut group = 0;
        while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(20), w1.next()).await {
            group += 1;
        }
        while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(20), w2.next()).await {
            group += 1;
        }
        assert_eq!(group, 2);
        drop((star, tail, w1, w2));
        assert_eq!(bus.subscriptions(), 0);
        assert_eq!(
            bus.request("a.b", "?", Duration::from_millis(50)).await,
            Err(BusError::NoResponders("a.b".into()))
        );
        let mut server = bus.subscribe("svc", None).unwrap();
        let responder = bus.clone();
        tokio::spawn(async move {
            while let Some(m) = server.next().await {
                let reply = m.reply_to.unwrap();
                responder.publish(&reply, None, m.body).unwrap();
            }
        });
        let reply = bus
            .request("svc", "ping", Duration::from_secs(1))
            .await
            .unwrap();
        assert_eq!(reply.body, "ping");
        assert!(matches!(
            bus.publish("a.*", None, ""),
            Err(BusError::Invalid(_))
        ));
        assert!(bus.subscribe("a b", None).is_err());
    }
}
