//! The in-process workflow backend: the same store and queue semantics as JetStream, for a
//! single host with no server.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::Notify;

use super::backend::{
    BackendError, Delivery, Entry, KeyWatch, RunStore, StepMessage, StepQueue, StepStream,
};
use super::state::now_ms;

/// Run state and step queues in this process. Clones share everything.
#[derive(Clone, Default)]
pub struct MemoryBackend {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for MemoryBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryBackend").finish_non_exhaustive()
    }
}

#[derive(Default)]
struct Inner {
    /// Runs are kept encoded, as on JetStream. A typed store (each run kept as a decoded
    /// `RunState`, no JSON per step) measured 15-25% slower on the workflow benchmark:
    /// every retained run is then dozens of small allocations instead of one buffer, and
    /// copying and freeing them costs more than the JSON it saves.
    entries: Mutex<HashMap<String, Entry>>,
    revision: AtomicU64,
    routes: Mutex<HashMap<String, Arc<Route>>>,
    /// IDs of the messages queued or being worked on. A publish under one of them is
    /// dropped. JetStream remembers IDs for a time window instead, because a publisher
    /// may crash and publish again long after; in one process the only duplicates come
    /// from a message still unsettled, and a copy published after the original was
    /// acknowledged finds its step final and does nothing. So the set holds what is in
    /// flight, not every message of the last two minutes.
    live: Arc<Mutex<HashSet<Arc<str>>>>,
    /// The keys being watched, each with the channel its watches receive revisions on.
    watchers: Mutex<HashMap<String, tokio::sync::watch::Sender<u64>>>,
    /// How many keys are watched: a write looks the key up only when some are.
    watched: AtomicUsize,
}

/// The queue of one route.
#[derive(Default)]
struct Route {
    ready: Mutex<VecDeque<Queued>>,
    arrived: Notify,
    /// Streams consuming it now.
    consumers: AtomicUsize,
}

/// A message waiting in a route: its ID, how often it was delivered before, and when it
/// was first queued.
struct Queued {
    message: StepMessage,
    id: Arc<str>,
    delivered: u64,
    queued_ms: u64,
}

impl Route {
    fn push(&self, queued: Queued) {
        lock(&self.ready).push_back(queued);
        self.arrived.notify_one();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl MemoryBackend {
    /// An empty backend.
    pub fn new() -> Self {
        Self::default()
    }

    fn route(&self, name: &str) -> Arc<Route> {
        let mut routes = lock(&self.inner.routes);
        if let Some(route) = routes.get(name) {
            return route.clone();
        }
        routes.entry(name.to_string()).or_default().clone()
    }
}

impl MemoryBackend {
    fn insert(&self, key: &str, value: Bytes) -> Result<u64, BackendError> {
        let mut entries = lock(&self.inner.entries);
        if entries.contains_key(key) {
            return Err(BackendError::Conflict { key: key.into() });
        }
        let revision = self.inner.revision.fetch_add(1, Ordering::SeqCst) + 1;
        entries.insert(key.to_string(), Entry { value, revision });
        drop(entries);
        self.changed(key, revision);
        Ok(revision)
    }

    fn replace(&self, key: &str, value: Bytes, revision: u64) -> Result<u64, BackendError> {
        let mut entries = lock(&self.inner.entries);
        match entries.get_mut(key) {
            Some(entry) if entry.revision == revision => {
                let next = self.inner.revision.fetch_add(1, Ordering::SeqCst) + 1;
                let old = std::mem::replace(
                    entry,
                    Entry {
                        value,
                        revision: next,
                    },
                );
                drop(entries);
                // The old value is freed outside the lock.
                drop(old);
                self.changed(key, next);
                Ok(next)
            }
            _ => Err(BackendError::Conflict { key: key.into() }),
        }
    }

    /// Tells the watches of `key` that it is now at `revision`. Called after the entry is
    /// written, so a watch made before a read either sees this or its read saw the value.
    fn changed(&self, key: &str, revision: u64) {
        if self.inner.watched.load(Ordering::SeqCst) == 0 {
            return;
        }
        if let Some(sender) = lock(&self.inner.watchers).get(key) {
            sender.send_replace(revision);
        }
    }
}

#[async_trait]
impl RunStore for MemoryBackend {
    async fn get(&self, key: &str) -> Result<Option<Entry>, BackendError> {
        Ok(lock(&self.inner.entries).get(key).cloned())
    }

    async fn create(&self, key: &str, value: Bytes) -> Result<u64, BackendError> {
        self.insert(key, value)
    }

    async fn update(&self, key: &str, value: Bytes, revision: u64) -> Result<u64, BackendError> {
        self.replace(key, value, revision)
    }

    async fn keys(&self) -> Result<Vec<String>, BackendError> {
        Ok(lock(&self.inner.entries).keys().cloned().collect())
    }

    async fn watch(&self, key: &str) -> Result<Box<dyn KeyWatch>, BackendError> {
        let mut watchers = lock(&self.inner.watchers);
        let receiver = match watchers.get(key) {
            Some(sender) => sender.subscribe(),
            None => {
                let (sender, receiver) = tokio::sync::watch::channel(0);
                watchers.insert(key.to_string(), sender);
                self.inner.watched.fetch_add(1, Ordering::SeqCst);
                receiver
            }
        };
        Ok(Box::new(MemoryWatch {
            inner: self.inner.clone(),
            key: key.to_string(),
            receiver,
        }))
    }
}

/// A watch of one key: woken by every write of it after the watch began.
struct MemoryWatch {
    inner: Arc<Inner>,
    key: String,
    receiver: tokio::sync::watch::Receiver<u64>,
}

#[async_trait]
impl KeyWatch for MemoryWatch {
    async fn changed(&mut self) -> Result<Option<Entry>, BackendError> {
        // The sender stays in the map while any watch of the key lives, so this ends only
        // with a write.
        self.receiver.changed().await.map_err(|_| {
            BackendError::Unavailable(format!("the watch of {} was closed", self.key))
        })?;
        Ok(None)
    }
}

impl Drop for MemoryWatch {
    fn drop(&mut self) {
        let mut watchers = lock(&self.inner.watchers);
        // The last watch of the key (this one's receiver still counts) takes its channel.
        if watchers
            .get(&self.key)
            .is_some_and(|sender| sender.receiver_count() <= 1)
        {
            watchers.remove(&self.key);
            self.inner.watched.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

#[async_trait]
impl StepQueue for MemoryBackend {
    async fn publish(
        &self,
        route: &str,
        message: &StepMessage,
        id: &str,
    ) -> Result<(), BackendError> {
        let id: Arc<str> = Arc::from(id);
        if !lock(&self.inner.live).insert(id.clone()) {
            return Ok(());
        }
        self.route(route).push(Queued {
            message: message.clone(),
            id,
            delivered: 0,
            queued_ms: now_ms(),
        });
        Ok(())
    }

    async fn consume(&self, route: &str) -> Result<Box<dyn StepStream>, BackendError> {
        let route = self.route(route);
        route.consumers.fetch_add(1, Ordering::SeqCst);
        Ok(Box::new(MemoryStream {
            route,
            live: self.inner.live.clone(),
        }))
    }

    fn in_process(&self) -> bool {
        true
    }

    async fn served(&self, route: &str) -> Result<bool, BackendError> {
        Ok(lock(&self.inner.routes)
            .get(route)
            .is_some_and(|r| r.consumers.load(Ordering::SeqCst) > 0))
    }

    async fn backlog(&self) -> Result<Vec<String>, BackendError> {
        Ok(lock(&self.inner.routes)
            .iter()
            .filter(|(_, r)| !lock(&r.ready).is_empty())
            .map(|(name, _)| name.clone())
            .collect())
    }

    async fn take(&self, route: &str, max: usize) -> Result<Vec<Box<dyn Delivery>>, BackendError> {
        let route = self.route(route);
        let taken: Vec<Queued> = {
            let mut ready = lock(&route.ready);
            let n = max.min(ready.len());
            ready.drain(..n).collect()
        };
        Ok(taken
            .into_iter()
            .map(|queued| {
                Box::new(MemoryDelivery::new(&route, &self.inner.live, queued)) as Box<dyn Delivery>
            })
            .collect())
    }
}

struct MemoryStream {
    route: Arc<Route>,
    live: Arc<Mutex<HashSet<Arc<str>>>>,
}

impl Drop for MemoryStream {
    fn drop(&mut self) {
        self.route.consumers.fetch_sub(1, Ordering::SeqCst);
    }
}

#[async_trait]
impl StepStream for MemoryStream {
    async fn next(&mut self) -> Option<Result<Box<dyn Delivery>, BackendError>> {
        loop {
            let arrived = self.route.arrived.notified();
            tokio::pin!(arrived);
            arrived.as_mut().enable();
            let next = lock(&self.route.ready).pop_front();
            if let Some(queued) = next {
                return Some(Ok(Box::new(MemoryDelivery::new(
                    &self.route,
                    &self.live,
                    queued,
                ))));
            }
            arrived.await;
        }
    }
}

/// A delivery that goes back to its queue if it is dropped unsettled (its consumer died).
struct MemoryDelivery {
    route: Arc<Route>,
    live: Arc<Mutex<HashSet<Arc<str>>>>,
    message: StepMessage,
    id: Arc<str>,
    delivered: u64,
    queued_ms: u64,
    settled: AtomicBool,
}

impl MemoryDelivery {
    /// The next delivery of `queued`.
    fn new(route: &Arc<Route>, live: &Arc<Mutex<HashSet<Arc<str>>>>, queued: Queued) -> Self {
        MemoryDelivery {
            route: route.clone(),
            live: live.clone(),
            message: queued.message,
            id: queued.id,
            delivered: queued.delivered + 1,
            queued_ms: queued.queued_ms,
            settled: AtomicBool::new(false),
        }
    }

    /// The message again, for a later delivery.
    fn again(&self) -> Queued {
        Queued {
            message: self.message.clone(),
            id: self.id.clone(),
            delivered: self.delivered,
            queued_ms: self.queued_ms,
        }
    }
}

#[async_trait]
impl Delivery for MemoryDelivery {
    fn message(&self) -> &StepMessage {
        &self.message
    }

    fn delivered(&self) -> u64 {
        self.delivered
    }

    fn queued_ms(&self) -> u64 {
        self.queued_ms
    }

    async fn ack(self: Box<Self>) -> Result<(), BackendError> {
        self.settled.store(true, Ordering::SeqCst);
        lock(&self.live).remove(&self.id);
        Ok(())
    }

    async fn nak(self: Box<Self>, delay: Duration) -> Result<(), BackendError> {
        self.settled.store(true, Ordering::SeqCst);
        let (route, queued) = (self.route.clone(), self.again());
        if delay.is_zero() {
            route.push(queued);
        } else {
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                route.push(queued);
            });
        }
        Ok(())
    }

    async fn in_progress(&self) -> Result<(), BackendError> {
        Ok(())
    }
}

impl Drop for MemoryDelivery {
    fn drop(&mut self) {
        if !self.settled.load(Ordering::SeqCst) {
            self.route.push(self.again());
        }
    }
}
