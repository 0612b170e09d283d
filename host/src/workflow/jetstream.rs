//! The workflow backend on NATS JetStream, shared by any number of hosts: run state in a
//! key-value bucket (compare-and-set on the revision of each key) and step messages in a
//! work-queue stream, one durable pull consumer per route shared by every host consuming it.
//!
//! Each consumer also answers on a presence subject of its route
//! (`_SIGIL.serving.<prefix>.<route>`, a core NATS queue group), so anyone can ask whether
//! some host serves a route now: no responders means none does.
//!
//! Setup is idempotent: the stream, the bucket and the consumers are created when missing
//! and reused as they are when present, so hosts can start in any order. The bucket's stream
//! is created here rather than with `create_key_value`, which reads account limits that
//! servers older than 2.10 do not report.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;

use async_nats::jetstream::consumer::pull;
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, PullConsumer, ReplayPolicy, push};
use async_nats::jetstream::kv::{self, CreateErrorKind, Operation, UpdateErrorKind};
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::stream::{self, DiscardPolicy, RetentionPolicy, StorageType};
use async_nats::jetstream::{self, AckKind};
use async_trait::async_trait;
use futures::StreamExt;

use async_nats::RequestErrorKind;
use tokio::task::JoinHandle;

use super::backend::{
    BackendError, Delivery, Entry, KeyWatch, RunStore, StepMessage, StepQueue, StepStream,
};
use super::state::now_ms;

/// Most unacknowledged messages of one route in flight at once, over all hosts.
const MAX_ACK_PENDING: i64 = 10_000;

/// How long an answer that a route is served is trusted without asking again.
const PRESENCE_TTL: Duration = Duration::from_secs(1);

/// How long a presence request waits for an answer; a host that is there but too busy to
/// answer in time counts as serving.
const PRESENCE_TIMEOUT: Duration = Duration::from_secs(2);

/// The queue group of the presence responders: one answer is enough.
const PRESENCE_GROUP: &str = "sigil-serving";

/// Where and how the backend keeps its stream, bucket and consumers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JetStreamOptions {
    /// The name of the stream of step messages.
    pub stream: String,
    /// The subject prefix of step messages: a route's messages go to `<prefix>.<route>`.
    pub subject_prefix: String,
    /// The name of the key-value bucket of run state.
    pub bucket: String,
    /// How long a delivered message may stay unacknowledged before it is redelivered.
    pub ack_wait: Duration,
    /// How long the stream remembers message IDs to drop duplicate publishes.
    pub duplicate_window: Duration,
    /// How long connecting to the server may take.
    pub connect_timeout: Duration,
    /// How long a JetStream API request or a publish acknowledgement may take.
    pub request_timeout: Duration,
    /// Messages asked for by one pull request: few, so that a busy host does not hold
    /// messages other hosts could run, nor let them wait in its buffer while their ack
    /// wait runs. Match it to the steps a host runs at once.
    pub pull_batch: usize,
    /// Copies the server cluster keeps of the stream and of the bucket (1 to 5): 3 on a
    /// three-node cluster lets them outlive one node. Applied when they are created.
    pub replicas: usize,
}

impl Default for JetStreamOptions {
    fn default() -> Self {
        Self {
            stream: "SIGIL_STEPS".to_string(),
            subject_prefix: "sigil.steps".to_string(),
            bucket: "SIGIL_RUNS".to_string(),
            ack_wait: Duration::from_secs(30),
            duplicate_window: Duration::from_secs(120),
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(5),
            pull_batch: 16,
            replicas: 1,
        }
    }
}

/// The JetStream backend: a [`RunStore`] on a key-value bucket and a [`StepQueue`] on a
/// work-queue stream.
#[derive(Debug, Clone)]
pub struct JetStreamBackend {
    client: async_nats::Client,
    jetstream: jetstream::Context,
    kv: kv::Store,
    options: JetStreamOptions,
    presence: Arc<Presence>,
}

/// What this process knows about who serves which route.
#[derive(Debug, Default)]
struct Presence {
    /// Routes consumed in this process, and by how many streams.
    local: Mutex<HashMap<String, usize>>,
    /// Routes some host answered for, and when.
    seen: Mutex<HashMap<String, Instant>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl JetStreamBackend {
    /// Connects to the server at `url` and makes sure the stream and the bucket exist.
    /// `url` may list several servers of a cluster separated by commas
    /// (`nats://a:4222,nats://b:4222`): the connection moves to another when one fails.
    pub async fn connect(url: &str, options: JetStreamOptions) -> Result<Self, BackendError> {
        let servers = server_addrs(url)?;
        // In the order given: a host lists its own node first and moves on only when it fails.
        let client = async_nats::ConnectOptions::new()
            .retain_servers_order()
            .connection_timeout(options.connect_timeout)
            .request_timeout(Some(options.request_timeout))
            .connect(servers)
            .await
            .map_err(|err| unavailable(format!("connecting to {url}"), err))?;
        Self::from_client(client, options).await
    }

    /// Uses an existing connection and makes sure the stream and the bucket exist.
    pub async fn from_client(
        client: async_nats::Client,
        options: JetStreamOptions,
    ) -> Result<Self, BackendError> {
        let jetstream = jetstream::ContextBuilder::new()
            .timeout(options.request_timeout)
            .build(client.clone());

        ensure_stream(
            &jetstream,
            stream::Config {
                name: options.stream.clone(),
                subjects: vec![format!("{}.>", options.subject_prefix)],
                retention: RetentionPolicy::WorkQueue,
                storage: StorageType::File,
                duplicate_window: options.duplicate_window,
                num_replicas: options.replicas.max(1),
                ..Default::default()
            },
        )
        .await?;

        ensure_stream(
            &jetstream,
            stream::Config {
                name: format!("KV_{}", options.bucket),
                subjects: vec![format!("$KV.{}.>", options.bucket)],
                max_messages_per_subject: 1,
                discard: DiscardPolicy::New,
                storage: StorageType::File,
                allow_rollup: true,
                deny_delete: true,
                // Direct gets may be answered by a replica that lags behind the leader,
                // and a stale run read there could drop a step: with several replicas,
                // reads go to the leader (nats-server 2.9 has no read-after-write for
                // direct gets).
                allow_direct: options.replicas <= 1,
                num_replicas: options.replicas.max(1),
                ..Default::default()
            },
        )
        .await?;
        let kv = jetstream
            .get_key_value(options.bucket.clone())
            .await
            .map_err(|err| unavailable(format!("opening bucket {}", options.bucket), err))?;

        Ok(Self {
            client,
            jetstream,
            kv,
            options,
            presence: Arc::default(),
        })
    }

    /// The connection to the server.
    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    /// The options the backend was set up with.
    pub fn options(&self) -> &JetStreamOptions {
        &self.options
    }

    /// The subject of a route's messages.
    fn subject(&self, route: &str) -> String {
        format!("{}.{route}", self.options.subject_prefix)
    }

    /// The subject on which the consumers of a route answer that they are there (outside
    /// the stream's subjects, so nothing sent there is stored).
    fn presence_subject(&self, route: &str) -> String {
        format!("_SIGIL.serving.{}.{route}", self.options.subject_prefix)
    }

    /// The durable consumer of a route, created when missing.
    async fn consumer(&self, route: &str) -> Result<PullConsumer, BackendError> {
        let name = durable_name(route);
        let stream = self
            .jetstream
            .get_stream_no_info(&self.options.stream)
            .await
            .map_err(|err| unavailable(format!("opening stream {}", self.options.stream), err))?;
        let config = pull::Config {
            durable_name: Some(name.clone()),
            filter_subject: self.subject(route),
            ack_policy: AckPolicy::Explicit,
            ack_wait: self.options.ack_wait,
            max_deliver: -1,
            max_ack_pending: MAX_ACK_PENDING,
            ..Default::default()
        };
        match stream.get_or_create_consumer(&name, config).await {
            Ok(consumer) => Ok(consumer),
            // Another host may have created it between our lookup and our creation.
            Err(err) => stream
                .get_consumer(&name)
                .await
                .map_err(|_| unavailable(format!("creating consumer {name}"), err)),
        }
    }

    /// Answers presence requests for `route` until the returned task is aborted.
    async fn answer_presence(&self, route: &str) -> Result<JoinHandle<()>, BackendError> {
        let subject = self.presence_subject(route);
        let mut requests = self
            .client
            .queue_subscribe(subject.clone(), PRESENCE_GROUP.to_string())
            .await
            .map_err(|err| unavailable(format!("subscribing to {subject}"), err))?;
        // Once the server has the subscription, a presence request finds it.
        sigil_providers::plugin::wire::settle(&self.client)
            .await
            .map_err(|err| unavailable(format!("subscribing to {subject}"), err))?;
        let client = self.client.clone();
        Ok(tokio::spawn(async move {
            while let Some(request) = requests.next().await {
                if let Some(reply) = request.reply {
                    let _ = client.publish(reply, Bytes::new()).await;
                }
            }
        }))
    }
}

/// The servers of a comma-separated list of URLs.
fn server_addrs(url: &str) -> Result<Vec<async_nats::ServerAddr>, BackendError> {
    let servers = url
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<async_nats::ServerAddr>()
                .map_err(|err| unavailable(format!("the server address {s:?}"), err))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if servers.is_empty() {
        return Err(unavailable(
            format!("the server address {url:?}"),
            "no server named",
        ));
    }
    Ok(servers)
}

/// Gets the stream named in `config`, creating it when it does not exist; an existing stream
/// is used as it is, even when its configuration differs.
async fn ensure_stream(
    jetstream: &jetstream::Context,
    config: stream::Config,
) -> Result<stream::Stream, BackendError> {
    let name = config.name.clone();
    match jetstream.get_or_create_stream(config).await {
        Ok(stream) => Ok(stream),
        // Another host may have created it between our lookup and our creation.
        Err(err) => jetstream
            .get_stream(&name)
            .await
            .map_err(|_| unavailable(format!("creating stream {name}"), err)),
    }
}

/// A durable consumer name for `route`: names may not hold `.`, `*`, `>` or whitespace.
fn durable_name(route: &str) -> String {
    let route: String = route
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("steps_{route}")
}

/// An [`BackendError::Unavailable`] saying what failed and why.
fn unavailable(what: impl std::fmt::Display, err: impl std::fmt::Display) -> BackendError {
    BackendError::Unavailable(format!("{what}: {err}"))
}

#[async_trait]
impl RunStore for JetStreamBackend {
    async fn get(&self, key: &str) -> Result<Option<Entry>, BackendError> {
        let entry = self
            .kv
            .entry(key)
            .await
            .map_err(|err| unavailable(format!("reading {key}"), err))?;
        Ok(entry.and_then(|entry| match entry.operation {
            Operation::Put => Some(Entry {
                value: entry.value,
                revision: entry.revision,
            }),
            Operation::Delete | Operation::Purge => None,
        }))
    }

    async fn create(&self, key: &str, value: Bytes) -> Result<u64, BackendError> {
        self.kv
            .create(key, value)
            .await
            .map_err(|err| match err.kind() {
                CreateErrorKind::AlreadyExists => BackendError::Conflict {
                    key: key.to_string(),
                },
                _ => unavailable(format!("creating {key}"), err),
            })
    }

    async fn update(&self, key: &str, value: Bytes, revision: u64) -> Result<u64, BackendError> {
        self.kv
            .update(key, value, revision)
            .await
            .map_err(|err| match err.kind() {
                UpdateErrorKind::WrongLastRevision => BackendError::Conflict {
                    key: key.to_string(),
                },
                _ => unavailable(format!("updating {key}"), err),
            })
    }

    async fn keys(&self) -> Result<Vec<String>, BackendError> {
        let mut keys = self
            .kv
            .keys()
            .await
            .map_err(|err| unavailable("listing keys", err))?;
        let mut all = Vec::new();
        while let Some(key) = keys.next().await {
            all.push(key.map_err(|err| unavailable("listing keys", err))?);
        }
        Ok(all)
    }

    async fn watch(&self, key: &str) -> Result<Box<dyn KeyWatch>, BackendError> {
        // An ordered push consumer of the key's subject in the bucket's stream, delivering
        // only what is stored from now on (async-nats's `Store::watch`, but named, so that
        // it is deleted when the watch ends rather than left to the server's 30-second
        // inactivity timeout: a consumer per wait would otherwise pile up). It is
        // subscribed when this returns, so a read issued after it (on the same connection,
        // so the server takes it after the subscription) misses nothing: a change the read
        // does not see is pushed to the watch.
        let name = format!("watch_{}", uuid::Uuid::new_v4().simple());
        let consumer = self
            .kv
            .stream
            .create_consumer(push::OrderedConfig {
                name: Some(name.clone()),
                deliver_subject: self.client.new_inbox(),
                description: Some(format!("sigil watch of {key}")),
                filter_subject: format!("{}{key}", self.kv.prefix),
                deliver_policy: DeliverPolicy::New,
                replay_policy: ReplayPolicy::Instant,
                ..Default::default()
            })
            .await
            .map_err(|err| unavailable(format!("watching {key}"), err))?;
        let messages = match consumer.messages().await {
            Ok(messages) => messages,
            Err(err) => {
                delete_consumer(self.kv.stream.clone(), name);
                return Err(unavailable(format!("watching {key}"), err));
            }
        };
        Ok(Box::new(JetStreamWatch {
            key: key.to_string(),
            messages,
            stream: self.kv.stream.clone(),
            consumer: name,
        }))
    }
}

/// Deletes a watch's consumer in the background: nobody waits for the clean-up, and a
/// consumer it misses ends by itself after the server's inactivity timeout.
fn delete_consumer(stream: stream::Stream, name: String) {
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(async move {
            let _ = stream.delete_consumer(&name).await;
        });
    }
}

/// A watch of one key of the bucket; its consumer is deleted when it is dropped.
struct JetStreamWatch {
    key: String,
    messages: push::Ordered,
    stream: stream::Stream,
    consumer: String,
}

#[async_trait]
impl KeyWatch for JetStreamWatch {
    async fn changed(&mut self) -> Result<Option<Entry>, BackendError> {
        let what = || format!("watching {}", self.key);
        let message = match self.messages.next().await {
            Some(Ok(message)) => message,
            Some(Err(err)) => return Err(unavailable(what(), err)),
            None => return Err(unavailable(what(), "the watch ended")),
        };
        let info = message.info().map_err(|err| unavailable(what(), err))?;
        let revision = info.stream_sequence;
        // A deletion or purge carries no value: let the reader see what is left.
        let removed = message
            .headers
            .as_ref()
            .and_then(|h| h.get("KV-Operation"))
            .is_some_and(|op| op.as_str() != "PUT");
        if removed {
            return Ok(None);
        }
        Ok(Some(Entry {
            value: message.payload.clone(),
            revision,
        }))
    }
}

impl Drop for JetStreamWatch {
    fn drop(&mut self) {
        delete_consumer(self.stream.clone(), std::mem::take(&mut self.consumer));
    }
}

#[async_trait]
impl StepQueue for JetStreamBackend {
    async fn publish(
        &self,
        route: &str,
        message: &StepMessage,
        id: &str,
    ) -> Result<(), BackendError> {
        let payload = serde_json::to_vec(message)
            .map_err(|err| unavailable("encoding a step message", err))?;
        let subject = self.subject(route);
        self.jetstream
            .send_publish(
                subject.clone(),
                PublishMessage::build()
                    .payload(payload.into())
                    .message_id(id),
            )
            .await
            .map_err(|err| unavailable(format!("publishing to {subject}"), err))?
            .await
            .map_err(|err| unavailable(format!("publishing to {subject}"), err))?;
        Ok(())
    }

    async fn consume(&self, route: &str) -> Result<Box<dyn StepStream>, BackendError> {
        let consumer = self.consumer(route).await?;
        let messages = consumer
            .stream()
            .max_messages_per_batch(self.options.pull_batch.max(1))
            .heartbeat(Duration::from_secs(5))
            .messages()
            .await
            .map_err(|err| unavailable(format!("consuming {}", durable_name(route)), err))?;
        let responder = self.answer_presence(route).await?;
        *lock(&self.presence.local)
            .entry(route.to_string())
            .or_default() += 1;
        Ok(Box::new(JetStreamSteps {
            messages,
            responder,
            route: route.to_string(),
            presence: self.presence.clone(),
        }))
    }

    async fn served(&self, route: &str) -> Result<bool, BackendError> {
        if lock(&self.presence.local)
            .get(route)
            .is_some_and(|n| *n > 0)
        {
            return Ok(true);
        }
        if lock(&self.presence.seen)
            .get(route)
            .is_some_and(|at| at.elapsed() < PRESENCE_TTL)
        {
            return Ok(true);
        }
        let subject = self.presence_subject(route);
        let asked = self
            .client
            .send_request(
                subject.clone(),
                async_nats::Request::new().timeout(Some(PRESENCE_TIMEOUT)),
            )
            .await;
        match asked {
            Ok(_) => {
                let mut seen = lock(&self.presence.seen);
                if seen.len() >= 4096 {
                    seen.clear();
                }
                seen.insert(route.to_string(), Instant::now());
                Ok(true)
            }
            Err(err) => match err.kind() {
                RequestErrorKind::NoResponders => Ok(false),
                // Someone is subscribed but did not answer in time: busy, not gone.
                RequestErrorKind::TimedOut => Ok(true),
                _ => Err(unavailable(format!("asking who serves {route}"), err)),
            },
        }
    }

    async fn backlog(&self) -> Result<Vec<String>, BackendError> {
        let stream = self
            .jetstream
            .get_stream_no_info(&self.options.stream)
            .await
            .map_err(|err| unavailable(format!("opening stream {}", self.options.stream), err))?;
        let prefix = format!("{}.", self.options.subject_prefix);
        let mut subjects = stream
            .info_with_subjects(format!("{prefix}>"))
            .await
            .map_err(|err| unavailable(format!("reading stream {}", self.options.stream), err))?;
        let mut routes = Vec::new();
        while let Some(subject) = subjects.next().await {
            let (subject, count) = subject.map_err(|err| {
                unavailable(format!("reading stream {}", self.options.stream), err)
            })?;
            if count > 0
                && let Some(route) = subject.strip_prefix(&prefix)
            {
                routes.push(route.to_string());
            }
        }
        Ok(routes)
    }

    async fn take(&self, route: &str, max: usize) -> Result<Vec<Box<dyn Delivery>>, BackendError> {
        let consumer = self.consumer(route).await?;
        let name = durable_name(route);
        let mut batch = consumer
            .fetch()
            .max_messages(max.max(1))
            .messages()
            .await
            .map_err(|err| unavailable(format!("fetching from {name}"), err))?;
        let mut taken: Vec<Box<dyn Delivery>> = Vec::new();
        let collect = async {
            while let Some(message) = batch.next().await {
                let message =
                    message.map_err(|err| unavailable(format!("fetching from {name}"), err))?;
                if let Some(delivery) = JetStreamDelivery::new(message).await {
                    taken.push(Box::new(delivery));
                }
            }
            Ok::<_, BackendError>(())
        };
        // The messages fetched so far stay with us (they are settled by the caller or
        // redelivered after the ack wait) even if the rest does not come in time.
        match tokio::time::timeout(self.options.request_timeout, collect).await {
            Ok(Err(e)) if taken.is_empty() => return Err(e),
            _ => {}
        }
        Ok(taken)
    }
}

/// The messages of one route, from its durable pull consumer; while it lives, this
/// process answers that it serves the route.
struct JetStreamSteps {
    messages: pull::Stream,
    responder: JoinHandle<()>,
    route: String,
    presence: Arc<Presence>,
}

impl Drop for JetStreamSteps {
    fn drop(&mut self) {
        self.responder.abort();
        let mut local = lock(&self.presence.local);
        if let Some(n) = local.get_mut(&self.route) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                local.remove(&self.route);
            }
        }
    }
}

#[async_trait]
impl StepStream for JetStreamSteps {
    async fn next(&mut self) -> Option<Result<Box<dyn Delivery>, BackendError>> {
        loop {
            let message = match self.messages.next().await? {
                Ok(message) => message,
                Err(err) => return Some(Err(unavailable("receiving step messages", err))),
            };
            if let Some(delivery) = JetStreamDelivery::new(message).await {
                return Some(Ok(Box::new(delivery)));
            }
        }
    }
}

/// One delivery of a step message, acknowledged through its JetStream message.
struct JetStreamDelivery {
    message: jetstream::Message,
    step: StepMessage,
    delivered: u64,
    queued_ms: u64,
}

impl JetStreamDelivery {
    /// The delivery of `message`; a message that is not a step message is terminated
    /// (never delivered again) and `None` answered.
    async fn new(message: jetstream::Message) -> Option<Self> {
        match serde_json::from_slice::<StepMessage>(&message.payload) {
            Ok(step) => {
                let (delivered, queued_ms) = message.info().map_or((1, now_ms()), |info| {
                    let published = info.published.unix_timestamp_nanos() / 1_000_000;
                    (
                        u64::try_from(info.delivered).unwrap_or(1),
                        u64::try_from(published).unwrap_or(0),
                    )
                });
                Some(JetStreamDelivery {
                    message,
                    step,
                    delivered,
                    queued_ms,
                })
            }
            Err(err) => {
                tracing::warn!(
                    subject = %message.subject,
                    error = %err,
                    "dropping a message that is not a step message"
                );
                if let Err(err) = message.ack_with(AckKind::Term).await {
                    tracing::warn!(error = %err, "could not terminate an invalid message");
                }
                None
            }
        }
    }
}

#[async_trait]
impl Delivery for JetStreamDelivery {
    fn message(&self) -> &StepMessage {
        &self.step
    }

    fn delivered(&self) -> u64 {
        self.delivered
    }

    fn queued_ms(&self) -> u64 {
        self.queued_ms
    }

    async fn ack(self: Box<Self>) -> Result<(), BackendError> {
        // Not confirmed: a lost acknowledgement only means a redelivery, which the
        // scheduler answers without running the step again (its result is stored).
        self.message
            .ack()
            .await
            .map_err(|err| unavailable("acknowledging a step message", err))
    }

    async fn nak(self: Box<Self>, delay: Duration) -> Result<(), BackendError> {
        self.message
            .ack_with(AckKind::Nak(Some(delay)))
            .await
            .map_err(|err| unavailable("rejecting a step message", err))
    }

    async fn in_progress(&self) -> Result<(), BackendError> {
        self.message
            .ack_with(AckKind::Progress)
            .await
            .map_err(|err| unavailable("extending a step message", err))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_may_list_several_servers() {
        let servers = server_addrs("nats://127.0.0.1:4222, nats://127.0.0.1:4223,").unwrap();
        let ports: Vec<u16> = servers.iter().map(async_nats::ServerAddr::port).collect();
        assert_eq!(ports, [4222, 4223]);
        assert_eq!(server_addrs("nats://127.0.0.1:4222").unwrap().len(), 1);
        assert!(server_addrs(" , ").is_err());
    }
}
