//! The `wasmcloud:messaging` providers: publish-subscribe and request-reply on NATS-style
//! subjects.
//!
//! Two backends serve the same contract with the same semantics (subjects, `*` and `>`
//! wildcards, queue groups, request-reply with a timeout and a "no responders" error):
//!
//! - [`NatsMessaging`] (kind `nats`) uses a NATS server. Provider config: `url` (default
//!   `nats://127.0.0.1:4222`), `connect_timeout` (default `2s`) and `request_timeout`
//!   (default `5s`: the timeout of a `Request` whose `timeout_ms` is 0, and the cap of
//!   any other). Timeouts are at most `1h`. Starting waits up to `connect_timeout` for
//!   the first connection, and goes on without it: the host starts while NATS is down,
//!   and the client connects when the server appears (it retries every 0.1 to 2 s).
//!   While NATS is unreachable, `Publish` and `Request` fail at once as "backend
//!   unavailable", naming the address, and the provider reports itself unhealthy.
//!   Subscriptions survive a server restart. A `Publish` returns once the server has
//!   confirmed it (a flush, bounded by `request_timeout` and the call's deadline).
//! - [`BusMessaging`] (kind `bus`) uses an in-process [`Bus`], so that one machine needs
//!   no server. Provider config: `request_timeout` (as above). Other parts of the host can
//!   share the same [`Bus`] ([`BusMessaging::with_bus`]).
//!
//! Link config:
//!
//! - `subscribe`: comma-separated subject patterns the actor receives, each `subject` or
//!   `subject|queue-group` (one member of a queue group gets each message). Each message
//!   is delivered by invoking the actor's `HandleMessage`; an error it returns is logged,
//!   and the message is not redelivered.
//! - `publish`: comma-separated subject patterns the actor may `Publish` and `Request`
//!   on. **Deny by default**: without `publish` the actor may publish nowhere. A refused
//!   subject is an error naming the subject and the allowlist, and nothing is sent.
//! - `max_concurrent`: how many deliveries to the actor may run at once on this link
//!   (default 64); further messages wait.
//!
//! **Replies.** To answer a delivered message, the actor publishes to its `reply_to`.
//! Such subjects (`_INBOX.…`) are not in the allowlist: the provider remembers the
//! reply subjects it delivered on each link and lets the actor publish to each of them
//! once, within `request_timeout` (at least 30 s) of the delivery. A `Publish` may carry
//! its own `reply_to` only if the link may publish to that subject or subscribes to it.
//!
//! **Isolation.** An actor publishes and requests only on the subjects its link allows,
//! and receives only what its link subscribes to. Subject patterns are checked when the
//! link is added.
//!
//! **Graceful shutdown.** [`Provider::quiesce`](crate::Provider::quiesce) unsubscribes
//! every link and waits up to 30 s for the deliveries in flight to finish, while actors
//! can still publish (their replies go out); [`Provider::stop`](crate::Provider::stop)
//! does the same for whatever is left, forgets the links and closes the connection.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::StreamExt;
use futures::stream::BoxStream;
use sigil_actor::contracts::messaging::{
    self as msg, CONTRACT_ID, Message, OP_HANDLE_MESSAGE, OP_PUBLISH, OP_REQUEST,
};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;

use crate::subject::{SubjectAllowlist, matches, validate_pattern, validate_subject};
use crate::{
    ActorInvoker, Health, Invocation, Link, LinkConfig, LinkTable, NoActors, ProviderError, encode,
};

mod bus;
mod nats;

pub use bus::{Bus, BusError, BusMessage, BusMessaging, BusSubscription};
pub use nats::NatsMessaging;

/// The default of `request_timeout`.
const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// The default of the link's `max_concurrent`.
const DEFAULT_MAX_CONCURRENT: usize = 64;
/// The largest `max_concurrent` a link may ask for.
const MAX_CONCURRENT_LIMIT: usize = 10_000;
/// How long `stop` waits for deliveries in flight.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// The shortest time a delivered reply subject stays open to the actor.
const MIN_REPLY_WINDOW: Duration = Duration::from_secs(30);
/// How many delivered reply subjects a link remembers at most.
const MAX_REPLY_SUBJECTS: usize = 10_000;

/// The link config keys.
const LINK_KEYS: &[&str] = &["subscribe", "publish", "max_concurrent"];

/// A stream of the messages of one subscription; dropping it unsubscribes.
type MessageStream = BoxStream<'static, Message>;

/// Why a backend could not send.
#[derive(Debug, Clone, PartialEq, Eq)]
enum SendError {
    /// The backend cannot be reached now.
    Unavailable(String),
    /// A request found nobody subscribed.
    NoResponders,
    /// A request got no reply in time.
    TimedOut(Duration),
    /// The request itself is invalid (too large, a bad subject).
    Invalid(String),
}

/// What a messaging backend does; subjects and permissions are checked before it is
/// called.
#[async_trait]
trait Transport: Send + Sync + 'static {
    /// Connects (or starts connecting) to the backend.
    async fn connect(&self) -> Result<(), SendError> {
        Ok(())
    }
    /// Publishes, and waits no longer than `within` for the backend to take it.
    async fn publish(
        &self,
        subject: &str,
        reply_to: Option<&str>,
        body: Vec<u8>,
        within: Duration,
    ) -> Result<(), SendError>;
    /// Sends a request and waits up to `timeout` for the first reply.
    async fn request(
        &self,
        subject: &str,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<Message, SendError>;
    /// Subscribes to `pattern`, in queue group `queue` if given.
    async fn subscribe(
        &self,
        pattern: &str,
        queue: Option<&str>,
    ) -> Result<MessageStream, SendError>;
    /// Whether the backend is reachable.
    async fn health(&self) -> Health;
    /// Pushes out whatever is buffered, within `within`.
    async fn flush(&self, within: Duration) {
        let _ = within;
    }
    /// Closes the connection to the backend, after a last flush.
    async fn close(&self) {}
}

/// One `subscribe` item of a link.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Subscription {
    pattern: String,
    queue: Option<String>,
}

/// What a link's configuration says.
#[derive(Debug)]
struct Settings {
    publish: SubjectAllowlist,
    subscriptions: Vec<Subscription>,
    max_concurrent: usize,
}

fn config_error(key: &str, error: impl std::fmt::Display) -> ProviderError {
    ProviderError::Config(format!("`{key}`: {error}"))
}

/// Whether `name` may name a queue group: not empty, no spaces, controls or `|`.
fn valid_queue_group(name: &str) -> bool {
    !name.is_empty()
        && !name
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '|')
}

/// Validates a link's configuration.
fn settings(config: &LinkConfig) -> Result<Settings, ProviderError> {
    config.only(LINK_KEYS)?;
    let publish =
        SubjectAllowlist::new(config.list("publish")).map_err(|e| config_error("publish", e))?;
    let mut subscriptions = Vec::new();
    for item in config.list("subscribe") {
        let (pattern, queue) = match item.split_once('|') {
            Some((pattern, queue)) => (pattern.trim(), Some(queue.trim())),
            None => (item.as_str(), None),
        };
        validate_pattern(pattern).map_err(|e| config_error("subscribe", e))?;
        if let Some(queue) = queue
            && !valid_queue_group(queue)
        {
            return Err(config_error(
                "subscribe",
                format!(
                    "{item:?}: the queue group after `|` must be a non-empty name without spaces"
                ),
            ));
        }
        subscriptions.push(Subscription {
            pattern: pattern.to_string(),
            queue: queue.map(str::to_string),
        });
    }
    let max_concurrent = match config.get("max_concurrent") {
        None => DEFAULT_MAX_CONCURRENT,
        Some(text) => text
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_CONCURRENT_LIMIT).contains(n))
            .ok_or_else(|| {
                config_error(
                    "max_concurrent",
                    format!("{text:?} is not a number from 1 to {MAX_CONCURRENT_LIMIT}"),
                )
            })?,
    };
    Ok(Settings {
        publish,
        subscriptions,
        max_concurrent,
    })
}

/// The longest timeout a provider config may set.
const MAX_TIMEOUT: Duration = Duration::from_secs(3600);

/// Reads a timeout of the provider config: a positive duration of at most an hour.
pub(crate) fn timeout_setting(
    config: &LinkConfig,
    key: &str,
    default: Duration,
) -> Result<Duration, ProviderError> {
    let timeout = config.duration(key, default)?;
    if timeout.is_zero() || timeout > MAX_TIMEOUT {
        return Err(ProviderError::Config(format!(
            "`{key}` must be more than 0 and at most {MAX_TIMEOUT:?}"
        )));
    }
    Ok(timeout)
}

/// Reads the provider-level `request_timeout`.
fn request_timeout(config: &LinkConfig) -> Result<Duration, ProviderError> {
    timeout_setting(config, "request_timeout", DEFAULT_REQUEST_TIMEOUT)
}

/// The reply subjects delivered to a link's actor: each may be published to once, for a
/// while.
#[derive(Debug)]
struct ReplySubjects {
    window: Duration,
    open: Mutex<HashMap<String, Instant>>,
}

impl ReplySubjects {
    fn new(window: Duration) -> Self {
        ReplySubjects {
            window,
            open: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Instant>> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Opens `subject` for one reply.
    fn remember(&self, subject: &str) {
        let now = Instant::now();
        let mut open = self.lock();
        if open.len() >= MAX_REPLY_SUBJECTS {
            open.retain(|_, until| *until > now);
        }
        if open.len() >= MAX_REPLY_SUBJECTS {
            let oldest = open
                .iter()
                .min_by_key(|(_, until)| **until)
                .map(|(subject, _)| subject.clone());
            if let Some(oldest) = oldest {
                open.remove(&oldest);
            }
        }
        let until = now.checked_add(self.window).unwrap_or(now);
        open.insert(subject.to_string(), until);
    }

    /// Closes `subject`; whether it was open.
    fn take(&self, subject: &str) -> bool {
        self.lock()
            .remove(subject)
            .is_some_and(|until| until > Instant::now())
    }
}

/// Counts deliveries in flight, so that `stop` can wait for them.
#[derive(Debug, Clone)]
struct InFlight(Arc<watch::Sender<usize>>);

impl InFlight {
    fn new() -> Self {
        InFlight(Arc::new(watch::Sender::new(0)))
    }

    fn start(&self) -> InFlightGuard {
        self.0.send_modify(|n| *n += 1);
        InFlightGuard(self.0.clone())
    }

    fn count(&self) -> usize {
        *self.0.borrow()
    }

    /// Waits until nothing is in flight, or `timeout`; whether it got there.
    async fn idle(&self, timeout: Duration) -> bool {
        let mut rx = self.0.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|n| *n == 0))
            .await
            .is_ok_and(|r| r.is_ok())
    }
}

struct InFlightGuard(Arc<watch::Sender<usize>>);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// Where deliveries go: the host given to `start` (no actors before that).
type HostSlot = Arc<RwLock<Arc<dyn ActorInvoker>>>;

/// What a link's subscriptions need to deliver messages to its actor.
struct Delivery {
    actor: String,
    actor_name: String,
    link_name: String,
    host: HostSlot,
    permits: Arc<Semaphore>,
    replies: Arc<ReplySubjects>,
    in_flight: InFlight,
}

impl Delivery {
    /// Delivers each message of `stream`, at most `max_concurrent` at once.
    async fn run(self: Arc<Self>, mut stream: MessageStream, pattern: String) {
        while let Some(message) = stream.next().await {
            let Ok(permit) = self.permits.clone().acquire_owned().await else {
                break;
            };
            if let Some(reply_to) = &message.reply_to {
                self.replies.remember(reply_to);
            }
            let guard = self.in_flight.start();
            let this = self.clone();
            tokio::spawn(async move {
                this.deliver(message).await;
                drop(permit);
                drop(guard);
            });
        }
        tracing::debug!(actor = %self.actor_name, link = %self.link_name, %pattern, "subscription ended");
    }

    async fn deliver(&self, message: Message) {
        let subject = message.subject.clone();
        let payload = match encode(&message) {
            Ok(payload) => payload,
            Err(error) => {
                tracing::warn!(actor = %self.actor_name, %subject, %error, "cannot encode a message");
                return;
            }
        };
        let host = self.host.read().unwrap_or_else(|e| e.into_inner()).clone();
        if let Err(error) = host
            .invoke_actor(&self.actor, OP_HANDLE_MESSAGE, payload)
            .await
        {
            tracing::warn!(
                actor = %self.actor_name,
                link = %self.link_name,
                %subject,
                %error,
                "message delivery failed; it is not redelivered"
            );
        }
    }
}

/// A link's state.
struct LinkState {
    actor: String,
    link_name: String,
    publish: SubjectAllowlist,
    subscriptions: Vec<Subscription>,
    replies: Arc<ReplySubjects>,
    readers: Mutex<Vec<JoinHandle<()>>>,
}

impl LinkState {
    /// Whether a subscription of this link covers `subject`.
    fn subscribes_to(&self, subject: &str) -> bool {
        self.subscriptions
            .iter()
            .any(|s| matches(&s.pattern, subject))
    }

    /// Stops the link's subscriptions, and waits until they are gone.
    async fn unsubscribe(&self) {
        let readers = std::mem::take(&mut *self.readers.lock().unwrap_or_else(|e| e.into_inner()));
        for reader in &readers {
            reader.abort();
        }
        for reader in readers {
            let _ = reader.await;
        }
    }

    /// Why `subject` is refused.
    fn denied(&self, operation: &str, subject: &str) -> ProviderError {
        let allowed = if self.publish.is_empty() {
            "its `publish` allowlist is empty, so it may publish nowhere".to_string()
        } else {
            format!(
                "its `publish` allowlist is {}",
                self.publish.patterns().join(", ")
            )
        };
        ProviderError::Denied(format!(
            "{operation} to `{subject}`: link `{}` of actor {} does not allow this subject; {allowed}",
            self.link_name, self.actor
        ))
    }
}

impl Drop for LinkState {
    fn drop(&mut self) {
        for reader in self
            .readers
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            reader.abort();
        }
    }
}

/// The messaging provider over a transport: links, permissions and deliveries.
struct Messaging<T: Transport> {
    transport: T,
    links: LinkTable<LinkState>,
    host: HostSlot,
    request_timeout: Duration,
    in_flight: InFlight,
    /// Set by `quiesce` and `stop`: links added later do not subscribe.
    quiesced: AtomicBool,
}

impl<T: Transport> Messaging<T> {
    fn new(transport: T, request_timeout: Duration) -> Self {
        Messaging {
            transport,
            links: LinkTable::new(CONTRACT_ID),
            host: Arc::new(RwLock::new(Arc::new(NoActors))),
            request_timeout,
            in_flight: InFlight::new(),
            quiesced: AtomicBool::new(false),
        }
    }

    /// Keeps `host` for deliveries and starts connecting; never fails for want of a
    /// server (the client keeps trying).
    async fn start(&self, host: Arc<dyn ActorInvoker>) -> Result<(), ProviderError> {
        *self.host.write().unwrap_or_else(|e| e.into_inner()) = host;
        if let Err(error) = self.transport.connect().await {
            tracing::warn!(
                ?error,
                "messaging backend not ready; calls fail until it is"
            );
        }
        Ok(())
    }

    /// Checks a link's settings without subscribing (see [`crate::Provider::check_link`]).
    fn check_link(&self, link: &Link) -> Result<(), ProviderError> {
        settings(&link.config).map(drop)
    }

    async fn link_added(&self, link: &Link) -> Result<(), ProviderError> {
        let settings = settings(&link.config)?;
        let permits = Arc::new(Semaphore::new(settings.max_concurrent));
        let replies = Arc::new(ReplySubjects::new(
            self.request_timeout.max(MIN_REPLY_WINDOW),
        ));
        let delivery = Arc::new(Delivery {
            actor: link.actor.subject.clone(),
            actor_name: link.actor.name.clone(),
            link_name: link.link_name.clone(),
            host: self.host.clone(),
            permits,
            replies: replies.clone(),
            in_flight: self.in_flight.clone(),
        });
        let state = LinkState {
            actor: link.actor.describe(),
            link_name: link.link_name.clone(),
            publish: settings.publish,
            subscriptions: settings.subscriptions,
            replies,
            readers: Mutex::new(Vec::new()),
        };
        let subscriptions = if self.quiesced.load(Ordering::SeqCst) {
            tracing::debug!(actor = %link.actor.name, "messaging is shutting down; the new link does not subscribe");
            &[][..]
        } else {
            &state.subscriptions[..]
        };
        for subscription in subscriptions {
            let stream = match self
                .transport
                .subscribe(&subscription.pattern, subscription.queue.as_deref())
                .await
            {
                Ok(stream) => stream,
                Err(error) => {
                    state.unsubscribe().await;
                    return Err(word(error, "subscribe", &subscription.pattern));
                }
            };
            let reader = tokio::spawn(delivery.clone().run(stream, subscription.pattern.clone()));
            state
                .readers
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(reader);
        }
        if let Some(previous) = self.links.insert(link, state) {
            previous.unsubscribe().await;
        }
        Ok(())
    }

    async fn link_removed(&self, link: &Link) {
        if let Some(state) = self.links.remove(link) {
            state.unsubscribe().await;
        }
    }

    async fn invoke(&self, call: Invocation<'_>) -> Result<Vec<u8>, ProviderError> {
        let state = self.links.get(call.actor, call.link_name)?;
        match call.operation {
            OP_PUBLISH => self.publish(&state, call).await,
            OP_REQUEST => self.request(&state, call).await,
            other => Err(ProviderError::unknown_operation(CONTRACT_ID, other)),
        }
    }

    /// How long a call may wait: `limit`, or less if its deadline comes first.
    fn within(&self, call: &Invocation<'_>, limit: Duration) -> Result<Duration, ProviderError> {
        let left = call.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(ProviderError::Timeout {
                contract_id: CONTRACT_ID.to_string(),
                operation: call.operation.to_string(),
                elapsed: Duration::ZERO,
            });
        }
        Ok(limit.min(left))
    }

    async fn publish(
        &self,
        state: &LinkState,
        call: Invocation<'_>,
    ) -> Result<Vec<u8>, ProviderError> {
        let op = call.operation;
        let req: msg::Publish = call.decode()?;
        validate_subject(&req.subject).map_err(|e| ProviderError::invalid(op, e))?;
        if let Some(reply_to) = &req.reply_to {
            validate_subject(reply_to)
                .map_err(|e| ProviderError::invalid(op, format!("reply_to: {e}")))?;
            if !state.publish.allows(reply_to) && !state.subscribes_to(reply_to) {
                return Err(ProviderError::Denied(format!(
                    "{op} to `{}` with reply_to `{reply_to}`: link `{}` of actor {} neither \
                     publishes nor subscribes to `{reply_to}`",
                    req.subject, state.link_name, state.actor
                )));
            }
        }
        if !state.publish.allows(&req.subject) && !state.replies.take(&req.subject) {
            return Err(state.denied(op, &req.subject));
        }
        let within = self.within(&call, self.request_timeout)?;
        self.transport
            .publish(&req.subject, req.reply_to.as_deref(), req.body, within)
            .await
            .map_err(|e| word(e, op, &req.subject))?;
        Ok(Vec::new())
    }

    async fn request(
        &self,
        state: &LinkState,
        call: Invocation<'_>,
    ) -> Result<Vec<u8>, ProviderError> {
        let op = call.operation;
        let req: msg::Request = call.decode()?;
        validate_subject(&req.subject).map_err(|e| ProviderError::invalid(op, e))?;
        if !state.publish.allows(&req.subject) {
            return Err(state.denied(op, &req.subject));
        }
        let asked = match req.timeout_ms {
            0 => self.request_timeout,
            ms => Duration::from_millis(u64::from(ms)).min(self.request_timeout),
        };
        let timeout = self.within(&call, asked)?;
        let reply = self
            .transport
            .request(&req.subject, req.body, timeout)
            .await
            .map_err(|e| word(e, op, &req.subject))?;
        encode(&reply)
    }

    /// Stops every subscription, keeping the links so that actors can still publish
    /// (their replies among others), and waits for the deliveries in flight.
    async fn quiesce(&self) {
        self.quiesced.store(true, Ordering::SeqCst);
        for state in self.links.all() {
            state.unsubscribe().await;
        }
        self.drain().await;
    }

    async fn stop(&self) {
        self.quiesced.store(true, Ordering::SeqCst);
        for state in self.links.drain() {
            state.unsubscribe().await;
        }
        self.drain().await;
        self.transport.close().await;
    }

    /// Waits (bounded) for the deliveries in flight, then flushes what they published.
    async fn drain(&self) {
        let started = Instant::now();
        if !self.in_flight.idle(DRAIN_TIMEOUT).await {
            tracing::warn!(
                remaining = self.in_flight.count(),
                "messaging: deliveries still running after {DRAIN_TIMEOUT:?}; stopping anyway"
            );
        } else {
            tracing::debug!(elapsed = ?started.elapsed(), "messaging: deliveries drained");
        }
        self.transport.flush(Duration::from_secs(2)).await;
    }
}

/// Words a transport error for the actor.
fn word(error: SendError, operation: &str, subject: &str) -> ProviderError {
    match error {
        SendError::Unavailable(message) => ProviderError::unavailable(CONTRACT_ID, message),
        SendError::NoResponders => ProviderError::Failed(format!(
            "{operation} on `{subject}`: no responders (nobody subscribes to it)"
        )),
        SendError::TimedOut(after) => ProviderError::Failed(format!(
            "{operation} on `{subject}`: no reply within {after:?}; the request may or may \
             not have been handled, so retry it only if its handling is idempotent"
        )),
        SendError::Invalid(message) => ProviderError::invalid(operation, message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_settings() {
        let config = LinkConfig::new()
            .with("subscribe", "orders.*, jobs.>|workers")
            .with("publish", "replies.>")
            .with("max_concurrent", "8");
        let s = settings(&config).unwrap();
        assert_eq!(s.max_concurrent, 8);
        assert_eq!(
            s.subscriptions,
            vec![
                Subscription {
                    pattern: "orders.*".into(),
                    queue: None
                },
                Subscription {
                    pattern: "jobs.>".into(),
                    queue: Some("workers".into())
                },
            ]
        );
        assert!(s.publish.allows("replies.x"));
        assert!(settings(&LinkConfig::new()).unwrap().publish.is_empty());
        for bad in [
            LinkConfig::new().with("subscribe", "a.>.b"),
            LinkConfig::new().with("subscribe", "a|"),
            LinkConfig::new().with("subscribe", "a|two words"),
            LinkConfig::new().with("publish", "a b"),
            LinkConfig::new().with("max_concurrent", "0"),
            LinkConfig::new().with("max_concurrent", "many"),
            LinkConfig::new().with("pubish", "a"),
        ] {
            assert!(
                matches!(settings(&bad), Err(ProviderError::Config(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn reply_subjects_open_once() {
        let replies = ReplySubjects::new(Duration::from_secs(30));
        replies.remember("_INBOX.a");
        assert!(!replies.take("_INBOX.b"));
        assert!(replies.take("_INBOX.a"));
        assert!(!replies.take("_INBOX.a"));
        let short = ReplySubjects::new(Duration::ZERO);
        short.remember("_INBOX.c");
        assert!(!short.take("_INBOX.c"));
    }

    #[test]
    fn reply_subjects_are_bounded() {
        let replies = ReplySubjects::new(Duration::from_secs(30));
        for i in 0..MAX_REPLY_SUBJECTS + 10 {
            replies.remember(&format!("_INBOX.{i}"));
        }
        assert_eq!(replies.lock().len(), MAX_REPLY_SUBJECTS);
        assert!(replies.take(&format!("_INBOX.{}", MAX_REPLY_SUBJECTS + 9)));
    }
}
