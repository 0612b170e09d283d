//! Where workflow runs live and how steps travel: a revisioned key-value store for run
//! state and a work queue for step messages. Two implementations share these traits, with
//! the same semantics: NATS JetStream (many hosts) and in-process (one host, no server).
//!
//! The guarantees the scheduler builds on:
//! - the store's `update` succeeds only at the revision the caller read (compare-and-set),
//!   so concurrent hosts never overwrite each other's step results;
//! - a queued message is delivered to one consumer at a time and is redelivered when it is
//!   not acknowledged within the ack wait (its consumer died), or after the delay of a
//!   negative acknowledgement;
//! - publishing twice with the same message ID queues one message: within the deduplication
//!   window on JetStream, while the first is unacknowledged in process (a copy published
//!   later finds its step final and does nothing).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::state::RunState;

/// What went wrong in a backend.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BackendError {
    /// The entry changed since it was read (or exists already, for `create`).
    #[error("the entry {key} was changed by someone else")]
    Conflict {
        /// The key.
        key: String,
    },
    /// The server could not be reached or refused the operation.
    #[error("workflow backend unavailable: {0}")]
    Unavailable(String),
    /// A stored value is not in a form this host can read.
    #[error("the entry {key} is stored in a form this host cannot read: {message}")]
    Corrupt {
        /// The key.
        key: String,
        /// What is wrong.
        message: String,
    },
}

/// One revision of a stored value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The value (shared, not copied, by clones).
    pub value: Bytes,
    /// Its revision, for [`RunStore::update`].
    pub revision: u64,
}

/// Run state, keyed by run ID.
#[async_trait]
pub trait RunStore: Send + Sync + 'static {
    /// The current value of `key`, if any.
    async fn get(&self, key: &str) -> Result<Option<Entry>, BackendError>;
    /// Stores `value` under a new `key`; [`BackendError::Conflict`] when it exists.
    async fn create(&self, key: &str, value: Bytes) -> Result<u64, BackendError>;
    /// Replaces `key` if it is still at `revision`; [`BackendError::Conflict`] otherwise.
    async fn update(&self, key: &str, value: Bytes, revision: u64) -> Result<u64, BackendError>;
    /// Every key (for listing runs).
    async fn keys(&self) -> Result<Vec<String>, BackendError>;
    /// Starts watching `key`: every change stored after this returns is reported by the
    /// watch, so a read made after it misses nothing.
    async fn watch(&self, key: &str) -> Result<Box<dyn KeyWatch>, BackendError>;

    /// The run stored under `key` and its revision, decoded from JSON. A store that can
    /// do better (keep runs decoded) overrides it and the two methods below.
    async fn get_run(&self, key: &str) -> Result<Option<(Arc<RunState>, u64)>, BackendError> {
        match self.get(key).await? {
            Some(entry) => Ok(Some((
                Arc::new(decode_run(key, &entry.value)?),
                entry.revision,
            ))),
            None => Ok(None),
        }
    }

    /// [`RunStore::create`] for a run.
    async fn create_run(&self, key: &str, run: Arc<RunState>) -> Result<u64, BackendError> {
        self.create(key, encode_run(key, &run)?).await
    }

    /// [`RunStore::update`] for a run.
    async fn update_run(
        &self,
        key: &str,
        run: Arc<RunState>,
        revision: u64,
    ) -> Result<u64, BackendError> {
        self.update(key, encode_run(key, &run)?, revision).await
    }
}

/// Changes of one key, as they are stored, from [`RunStore::watch`].
#[async_trait]
pub trait KeyWatch: Send {
    /// Waits for the next change: its entry when the backend delivers values with changes,
    /// `None` when the key must be read again to see it. An error means changes may have
    /// been missed: read the key again and start a new watch.
    async fn changed(&mut self) -> Result<Option<Entry>, BackendError>;
}

/// A run as stored by networked backends: JSON, so the CLI and other tools can read it.
pub fn encode_run(key: &str, run: &RunState) -> Result<Bytes, BackendError> {
    serde_json::to_vec(run)
        .map(Bytes::from)
        .map_err(|e| BackendError::Corrupt {
            key: key.to_string(),
            message: e.to_string(),
        })
}

/// Reads a run stored by [`encode_run`].
pub fn decode_run(key: &str, bytes: &[u8]) -> Result<RunState, BackendError> {
    serde_json::from_slice(bytes).map_err(|e| BackendError::Corrupt {
        key: key.to_string(),
        message: e.to_string(),
    })
}

/// A step to run: which run, which step. Attempts and results live in the run state, so a
/// redelivered message carries nothing stale.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepMessage {
    /// The run ID.
    pub run: String,
    /// The step name.
    pub step: String,
}

/// The work queue of steps, partitioned by route (the actor a step names).
#[async_trait]
pub trait StepQueue: Send + Sync + 'static {
    /// Queues `message` on `route`; a second publish with the same `id` within the
    /// deduplication window (in process: while the first is unacknowledged) is dropped.
    async fn publish(
        &self,
        route: &str,
        message: &StepMessage,
        id: &str,
    ) -> Result<(), BackendError>;
    /// Starts consuming `route`, shared with every other consumer of the same route: each
    /// message goes to one of them.
    async fn consume(&self, route: &str) -> Result<Box<dyn StepStream>, BackendError>;

    /// Whether the queue lives and dies with this process (and its run store): then no
    /// crash can fall between storing a run and queueing its first steps, and a run is
    /// stored first. Otherwise the first steps are queued first, so that a stored run
    /// always has its messages.
    fn in_process(&self) -> bool {
        false
    }

    /// Whether some consumer, in this process or on any host, takes the messages of
    /// `route` now. A queue that cannot tell answers `true`.
    async fn served(&self, _route: &str) -> Result<bool, BackendError> {
        Ok(true)
    }

    /// The routes that hold messages now, delivered or not.
    async fn backlog(&self) -> Result<Vec<String>, BackendError> {
        Ok(Vec::new())
    }

    /// Up to `max` messages of `route` that are ready for delivery now, without waiting
    /// for more: how the messages of a route that no consumer serves are reached.
    async fn take(
        &self,
        _route: &str,
        _max: usize,
    ) -> Result<Vec<Box<dyn Delivery>>, BackendError> {
        Ok(Vec::new())
    }
}

/// Messages of one route, as they arrive.
#[async_trait]
pub trait StepStream: Send {
    /// The next delivery; `None` when the queue is closed.
    async fn next(&mut self) -> Option<Result<Box<dyn Delivery>, BackendError>>;
}

/// One delivery of a step message; it must end with [`Delivery::ack`] or
/// [`Delivery::nak`], or it is redelivered after the ack wait.
#[async_trait]
pub trait Delivery: Send + Sync {
    /// The message.
    fn message(&self) -> &StepMessage;
    /// How many times it has been delivered, this one included.
    fn delivered(&self) -> u64;
    /// When the message was first queued (Unix milliseconds).
    fn queued_ms(&self) -> u64;
    /// Done: never deliver it again.
    async fn ack(self: Box<Self>) -> Result<(), BackendError>;
    /// Deliver it again after `delay`.
    async fn nak(self: Box<Self>, delay: Duration) -> Result<(), BackendError>;
    /// Still working on it: restart the ack wait.
    async fn in_progress(&self) -> Result<(), BackendError>;
}

/// Turns an actor reference into a queue route: `key.<public key>` or `name.<name>`.
/// Names are limited to characters that are safe in a NATS subject token.
pub fn route(actor: &ActorRoute) -> String {
    match actor {
        ActorRoute::Key(key) => format!("key.{key}"),
        ActorRoute::Name(name) => format!("name.{name}"),
    }
}

/// How a step reaches its actor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ActorRoute {
    /// By the module's public key (the subject of its claims).
    Key(String),
    /// By the name in its claims.
    Name(String),
}
