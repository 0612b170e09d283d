//! The in-process workflow backend: the same store and queue semantics as JetStream, for a
//! single host with no server.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::Notify;

use super::backend::{BackendError, Delivery, Entry, RunStore, StepMessage, StepQueue, StepStream};

/// How long a message ID is remembered for deduplication.
const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

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
    entries: Mutex<HashMap<String, Entry>>,
    revision: AtomicU64,
    routes: Mutex<HashMap<String, Arc<Route>>>,
    seen: Mutex<Seen>,
}

/// Message IDs published within the deduplication window, oldest first.
#[derive(Default)]
struct Seen {
    ids: std::collections::HashSet<String>,
    order: VecDeque<(Instant, String)>,
}

/// The queue of one route.
#[derive(Default)]
struct Route {
    ready: Mutex<VecDeque<(StepMessage, u64)>>,
    arrived: Notify,
}

impl Route {
    fn push(&self, message: StepMessage, delivered: u64) {
        lock(&self.ready).push_back((message, delivered));
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
        lock(&self.inner.routes)
            .entry(name.to_string())
            .or_default()
            .clone()
    }
}

#[async_trait]
impl RunStore for MemoryBackend {
    async fn get(&self, key: &str) -> Result<Option<Entry>, BackendError> {
        Ok(lock(&self.inner.entries).get(key).cloned())
    }

    async fn create(&self, key: &str, value: Bytes) -> Result<u64, BackendError> {
        let mut entries = lock(&self.inner.entries);
        if entries.contains_key(key) {
            return Err(BackendError::Conflict { key: key.into() });
        }
        let revision = self.inner.revision.fetch_add(1, Ordering::SeqCst) + 1;
        entries.insert(key.to_string(), Entry { value, revision });
        Ok(revision)
    }

    async fn update(&self, key: &str, value: Bytes, revision: u64) -> Result<u64, BackendError> {
        let mut entries = lock(&self.inner.entries);
        match entries.get_mut(key) {
            Some(entry) if entry.revision == revision => {
                let next = self.inner.revision.fetch_add(1, Ordering::SeqCst) + 1;
                *entry = Entry {
                    value,
                    revision: next,
                };
                Ok(next)
            }
            _ => Err(BackendError::Conflict { key: key.into() }),
        }
    }

    async fn keys(&self) -> Result<Vec<String>, BackendError> {
        Ok(lock(&self.inner.entries).keys().cloned().collect())
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
        {
            let now = Instant::now();
            let mut seen = lock(&self.inner.seen);
            while let Some((at, _)) = seen.order.front() {
                if now.duration_since(*at) < DUPLICATE_WINDOW {
                    break;
                }
                if let Some((_, old)) = seen.order.pop_front() {
                    seen.ids.remove(&old);
                }
            }
            if !seen.ids.insert(id.to_string()) {
                return Ok(());
            }
            seen.order.push_back((now, id.to_string()));
        }
        self.route(route).push(message.clone(), 0);
        Ok(())
    }

    async fn consume(&self, route: &str) -> Result<Box<dyn StepStream>, BackendError> {
        Ok(Box::new(MemoryStream {
            route: self.route(route),
        }))
    }

    fn in_process(&self) -> bool {
        true
    }
}

struct MemoryStream {
    route: Arc<Route>,
}

#[async_trait]
impl StepStream for MemoryStream {
    async fn next(&mut self) -> Option<Result<Box<dyn Delivery>, BackendError>> {
        loop {
            let arrived = self.route.arrived.notified();
            tokio::pin!(arrived);
            arrived.as_mut().enable();
            let next = lock(&self.route.ready).pop_front();
            if let Some((message, delivered)) = next {
                return Some(Ok(Box::new(MemoryDelivery {
                    route: self.route.clone(),
                    message,
                    delivered: delivered + 1,
                    settled: AtomicBool::new(false),
                })));
            }
            arrived.await;
        }
    }
}

/// A delivery that goes back to its queue if it is dropped unsettled (its consumer died).
struct MemoryDelivery {
    route: Arc<Route>,
    message: StepMessage,
    delivered: u64,
    settled: AtomicBool,
}

#[async_trait]
impl Delivery for MemoryDelivery {
    fn message(&self) -> &StepMessage {
        &self.message
    }

    fn delivered(&self) -> u64 {
        self.delivered
    }

    async fn ack(self: Box<Self>) -> Result<(), BackendError> {
        self.settled.store(true, Ordering::SeqCst);
        Ok(())
    }

    async fn nak(self: Box<Self>, delay: Duration) -> Result<(), BackendError> {
        self.settled.store(true, Ordering::SeqCst);
        let (route, message, delivered) =
            (self.route.clone(), self.message.clone(), self.delivered);
        if delay.is_zero() {
            route.push(message, delivered);
        } else {
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                route.push(message, delivered);
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
            self.route.push(self.message.clone(), self.delivered);
        }
    }
}
