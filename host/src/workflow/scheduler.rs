//! The scheduler: submits runs, consumes step messages, runs each step's actor, records
//! the result with compare-and-set, and queues the steps that became ready.
//!
//! Why nothing is lost and nothing runs twice into the results:
//! - a step message is acknowledged only after the step's result is stored, so a host that
//!   dies mid-step leaves the message unacknowledged and the queue redelivers it;
//! - claiming a step writes a fresh attempt token, and only the holder of the current
//!   token may record a result: a late answer from an attempt that was taken over is
//!   dropped, so each step has exactly one result;
//! - successors are published after the result is stored, under a message ID derived from
//!   the run and the step, so publishing again after a crash queues nothing new; a
//!   redelivered message for a finished step republishes its queued successors and is
//!   acknowledged;
//! - over the network a run's first steps are queued before the run is stored, so no
//!   stored run lacks its messages; a message whose run never appears is dropped once its
//!   submitter would have given up.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use super::backend::{BackendError, Delivery, RunStore, StepMessage, StepQueue};
use super::spec::{SpecError, Workflow, WorkflowSpec};
use super::state::{RunState, RunStatus, StepState, StepStatus, now_ms};

/// Runs one step's operation on an actor of this host.
#[async_trait]
pub trait StepRunner: Send + Sync + 'static {
    /// Invokes `operation` on `actor` (a public key or a name) with `payload`.
    async fn run(&self, actor: &str, operation: &str, payload: Vec<u8>) -> Result<Vec<u8>, String>;
}

/// A host runs steps on its loaded actors, in fresh instances.
#[async_trait]
impl StepRunner for crate::Host {
    async fn run(&self, actor: &str, operation: &str, payload: Vec<u8>) -> Result<Vec<u8>, String> {
        let loaded = self
            .actor(actor)
            .ok_or_else(|| format!("no actor {actor} is loaded on this host"))?;
        self.invoke_async(&loaded, operation, &payload)
            .await
            .map_err(|e| e.to_string())
    }
}

/// What went wrong with a workflow request.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WorkflowError {
    /// The spec or the inputs were refused.
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// The store or the queue failed.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// No run has this ID.
    #[error("no run {0}")]
    NoSuchRun(String),
    /// A step names an actor that no host serves now.
    #[error(
        "step {step:?}: no host runs actor {actor}; start a host that loads it (or fix the \
         step's actor), then submit the run again"
    )]
    NoHost {
        /// The step.
        step: String,
        /// Its actor, as the spec names it.
        actor: String,
    },
    /// A stored run could not be read.
    #[error("run {id} is stored in a form this host cannot read: {message}")]
    Corrupt {
        /// The run.
        id: String,
        /// What is wrong.
        message: String,
    },
}

/// How a scheduler behaves.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// This host's name, recorded on the steps it runs.
    pub host: String,
    /// Steps this host runs at once.
    pub max_concurrent: usize,
    /// How often a running step tells the queue it is still alive (keep it well under the
    /// queue's ack wait).
    pub progress_interval: Duration,
    /// How long to keep retrying the store or the queue while they are unreachable.
    pub patience: Duration,
    /// How long a step runs before its claim is written: a shorter step is claimed by
    /// the write of its result, which saves a round trip to the store per step.
    pub claim_after: Duration,
    /// How long a queued step may wait with no host serving its actor before it fails
    /// (time with hosts present but busy does not count).
    pub no_host_timeout: Duration,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            host: "sigil".into(),
            max_concurrent: 64,
            progress_interval: Duration::from_secs(5),
            patience: Duration::from_secs(120),
            claim_after: Duration::from_millis(20),
            no_host_timeout: Duration::from_secs(30),
        }
    }
}

/// A step result this host stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepEvent {
    /// The run.
    pub run: String,
    /// The step.
    pub step: String,
    /// What it became.
    pub status: StepStatus,
    /// The run's status after it.
    pub run_status: RunStatus,
}

/// The scheduler of one host; clone the `Arc` to share it.
pub struct Scheduler {
    events: tokio::sync::broadcast::Sender<StepEvent>,
    prefix: String,
    attempts: std::sync::atomic::AtomicU64,
    store: Arc<dyn RunStore>,
    queue: Arc<dyn StepQueue>,
    runner: Arc<dyn StepRunner>,
    config: SchedulerConfig,
    permits: Arc<Semaphore>,
    consumers: Mutex<Vec<JoinHandle<()>>>,
    workflows: Mutex<HashMap<String, Arc<Workflow>>>,
}

impl std::fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// How long a host waits for the run of a step message to be stored before it asks the
/// queue to deliver the message again later.
const UNKNOWN_RUN_WAIT: Duration = Duration::from_millis(64);
/// The delay before a message of a run not stored yet is delivered again.
const UNKNOWN_RUN_RETRY: Duration = Duration::from_secs(2);

/// How long a waiter goes without a change before it reads the run anyway: a backstop for
/// a change its watch missed (one made while a lost connection was being restored), not
/// how it learns of changes.
const WAIT_REREAD: Duration = Duration::from_secs(2);

/// The store key of a run.
pub fn run_key(id: &str) -> String {
    format!("run.{id}")
}

/// The queue message ID of a step: the same for every publish of it.
fn message_id(run: &str, step: &str) -> String {
    format!("{run}.{step}")
}

/// What claiming a step decided.
enum Claim {
    /// Run it (the token was written).
    Run,
    /// It is final: make sure its successors are queued, then acknowledge.
    Done,
    /// Nothing to do (the run is over, or the step will not run).
    Ignore,
    /// The run says the step waits for others, yet its message exists, so this read is
    /// behind the write that queued it (a replica that lags): read again later.
    Early,
    /// A stale copy: the message was redelivered to another host, which runs the step.
    /// Neither acknowledged nor refused, so the newer delivery stays in force.
    Stale,
}

/// What recording a result decided.
enum Recorded {
    /// Stored; publish these steps, then acknowledge.
    Advance(Vec<(String, String)>),
    /// Stored as a failure to retry after this delay.
    Retry(Duration),
    /// Another attempt holds the step: drop this result.
    Stale,
}

impl Scheduler {
    /// A scheduler over `store` and `queue`, running steps with `runner`.
    pub fn new(
        store: Arc<dyn RunStore>,
        queue: Arc<dyn StepQueue>,
        runner: Arc<dyn StepRunner>,
        config: SchedulerConfig,
    ) -> Arc<Self> {
        Arc::new(Scheduler {
            events: tokio::sync::broadcast::channel(4096).0,
            prefix: uuid::Uuid::new_v4().simple().to_string(),
            attempts: std::sync::atomic::AtomicU64::new(0),
            permits: Arc::new(Semaphore::new(config.max_concurrent.max(1))),
            store,
            queue,
            runner,
            config,
            consumers: Mutex::new(Vec::new()),
            workflows: Mutex::new(HashMap::new()),
        })
    }

    /// Starts a run: stores its state, then queues its first steps. `routes` gives each
    /// step's queue route; returns the run ID.
    pub async fn submit(
        &self,
        workflow: &Workflow,
        inputs: BTreeMap<String, Value>,
        routes: &HashMap<String, String>,
    ) -> Result<String, WorkflowError> {
        let id = uuid::Uuid::new_v4().simple().to_string();
        // A fresh random ID: no run can exist under it, so nothing is looked up first.
        self.submit_inner(&id, workflow, inputs, routes, false)
            .await?;
        Ok(id)
    }

    /// Starts a run under a chosen ID (letters, digits, `-` and `_`); when a run with that
    /// ID exists already, nothing is started and `false` is returned, so submitting twice
    /// is harmless.
    pub async fn submit_as(
        &self,
        id: &str,
        workflow: &Workflow,
        inputs: BTreeMap<String, Value>,
        routes: &HashMap<String, String>,
    ) -> Result<bool, WorkflowError> {
        self.submit_inner(id, workflow, inputs, routes, true).await
    }

    async fn submit_inner(
        &self,
        id: &str,
        workflow: &Workflow,
        inputs: BTreeMap<String, Value>,
        routes: &HashMap<String, String>,
        may_exist: bool,
    ) -> Result<bool, WorkflowError> {
        let inputs = workflow.resolve_inputs(inputs)?;
        if id.is_empty()
            || id.len() > 128
            || !id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(SpecError(format!("{id:?} is not a valid run ID")).into());
        }
        let id = id.to_string();
        let spec = self.store_spec(workflow).await?;
        let mut steps = BTreeMap::new();
        for (index, step) in workflow.spec.steps.iter().enumerate() {
            let name = &step.name;
            let route = routes.get(name).cloned().ok_or_else(|| {
                SpecError(format!("no route for step {name:?} (its actor is unknown)"))
            })?;
            steps.insert(
                name.clone(),
                StepState::pending(index, step, workflow.steps[name].max_attempts(), route),
            );
        }
        let mut run = RunState {
            id: id.clone(),
            workflow: workflow.spec.name.clone(),
            spec,
            inputs,
            status: RunStatus::Running,
            created_ms: now_ms(),
            finished_ms: None,
            steps,
            outputs: None,
            error: None,
        };
        run.advance();
        let run = Arc::new(run);
        let key = run_key(&id);
        if may_exist && self.patiently(|| self.store.get(&key)).await?.is_some() {
            return Ok(false);
        }
        self.check_served(workflow, &run).await?;
        // Over the network the first steps are queued before the run is stored: a
        // submitter that dies in between leaves messages of an unknown run, which hosts
        // drop after a grace period, never a stored run without messages. (A consumer
        // that gets a message first waits for the run to appear.) In one process either
        // order is safe, and storing first spares the consumer that wait.
        if self.queue.in_process() {
            match self
                .patiently(|| self.store.create_run(&key, run.clone()))
                .await
            {
                Ok(_) => {}
                Err(BackendError::Conflict { .. }) => return Ok(false),
                Err(e) => return Err(e.into()),
            }
            self.publish_queued(&run).await?;
        } else {
            // Sent together, the messages ahead of the run, on one connection: the server
            // takes them in that order, and no one waits a round trip between them.
            let queued = run.queued();
            let publishes = futures::future::join_all(
                queued
                    .iter()
                    .map(|step| self.publish(&run.id, std::slice::from_ref(step))),
            );
            let create = self.patiently(|| self.store.create_run(&key, run.clone()));
            let (published, created) = tokio::join!(publishes, create);
            match created {
                Ok(_) => {}
                Err(BackendError::Conflict { .. }) => return Ok(false),
                Err(e) => return Err(e.into()),
            }
            if let Some(Err(e)) = published.into_iter().find(Result::is_err) {
                // Stored but not queued: end the run rather than leave it waiting.
                let message = format!("its first steps could not be queued: {e}");
                let _ = self
                    .modify(&id, |run| {
                        if run.status.is_final() {
                            return ((), false);
                        }
                        run.status = RunStatus::Failed;
                        run.error = Some(message.clone());
                        run.finished_ms = Some(now_ms());
                        run.cancel_waiting();
                        ((), true)
                    })
                    .await;
                return Err(e);
            }
        }
        tracing::info!(run = %id, workflow = %workflow.spec.name, "run submitted");
        Ok(true)
    }

    /// Refuses a run with a step whose actor no host serves now: it would wait for
    /// nothing. (A host that stops later is covered by [`Scheduler::watch_unserved`].)
    async fn check_served(&self, workflow: &Workflow, run: &RunState) -> Result<(), WorkflowError> {
        let mut checked: HashMap<&str, bool> = HashMap::new();
        for step in &workflow.spec.steps {
            let Some(state) = run.steps.get(&step.name) else {
                continue;
            };
            let served = match checked.get(state.route.as_str()) {
                Some(served) => *served,
                None => {
                    let served = self.patiently(|| self.queue.served(&state.route)).await?;
                    checked.insert(&state.route, served);
                    served
                }
            };
            if !served {
                let named = route_actor(&state.route);
                let actor = if step.actor.trim() == named {
                    named.to_string()
                } else {
                    format!("{} ({named})", step.actor.trim())
                };
                return Err(WorkflowError::NoHost {
                    step: step.name.clone(),
                    actor,
                });
            }
        }
        Ok(())
    }

    /// Stores a spec once under `spec.<hash of its JSON>`; answers the key.
    async fn store_spec(&self, workflow: &Workflow) -> Result<String, WorkflowError> {
        let (key, bytes) = workflow
            .stored_spec()
            .map_err(|message| WorkflowError::Corrupt {
                id: workflow.spec.name.clone(),
                message,
            })?;
        if lock(&self.workflows).contains_key(key) {
            return Ok(key.to_string());
        }
        match self
            .patiently(|| self.store.create(key, bytes::Bytes::copy_from_slice(bytes)))
            .await
        {
            Ok(_) | Err(BackendError::Conflict { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        self.remember(key, Arc::new(workflow.clone()));
        Ok(key.to_string())
    }

    fn remember(&self, key: &str, workflow: Arc<Workflow>) {
        let mut cache = lock(&self.workflows);
        if cache.len() >= 1024 {
            cache.clear();
        }
        cache.insert(key.to_string(), workflow);
    }

    /// The checked spec a run runs (read once per spec, then cached: specs never change).
    pub async fn workflow(&self, run: &RunState) -> Result<Arc<Workflow>, WorkflowError> {
        if let Some(w) = lock(&self.workflows).get(&run.spec) {
            return Ok(w.clone());
        }
        let entry = self
            .patiently(|| self.store.get(&run.spec))
            .await?
            .ok_or_else(|| WorkflowError::Corrupt {
                id: run.id.clone(),
                message: format!("its spec {} is missing from the store", run.spec),
            })?;
        let spec: WorkflowSpec =
            serde_json::from_slice(&entry.value).map_err(|e| WorkflowError::Corrupt {
                id: run.id.clone(),
                message: format!("its spec {} cannot be read: {e}", run.spec),
            })?;
        let w = Arc::new(Workflow::check(spec)?);
        self.remember(&run.spec, w.clone());
        Ok(w)
    }

    /// The state of a run.
    pub async fn status(&self, id: &str) -> Result<RunState, WorkflowError> {
        let key = run_key(id);
        let (run, _) = self
            .patiently(|| self.store.get_run(&key))
            .await?
            .ok_or_else(|| WorkflowError::NoSuchRun(id.to_string()))?;
        Ok(Arc::unwrap_or_clone(run))
    }

    /// Every stored run.
    pub async fn list(&self) -> Result<Vec<RunState>, WorkflowError> {
        let keys = self.patiently(|| self.store.keys()).await?;
        let mut runs = Vec::new();
        for key in keys {
            if let Some(id) = key.strip_prefix("run.")
                && let Ok(run) = self.status(id).await
            {
                runs.push(run);
            }
        }
        runs.sort_by_key(|r| r.created_ms);
        Ok(runs)
    }

    /// Cancels a run: steps not started yet will not start; running steps finish, but
    /// nothing runs after them.
    pub async fn cancel(&self, id: &str) -> Result<RunState, WorkflowError> {
        let (_, run) = self
            .modify(id, |run| {
                if run.status.is_final() {
                    return ((), false);
                }
                run.status = RunStatus::Cancelled;
                run.error = Some("cancelled".into());
                run.finished_ms = Some(now_ms());
                run.cancel_waiting();
                ((), true)
            })
            .await?
            .ok_or_else(|| WorkflowError::NoSuchRun(id.to_string()))?;
        tracing::info!(run = %id, "run cancelled");
        Ok(run)
    }

    /// Waits until the run ends, calling `progress` with each new state seen. It is woken
    /// by the store's notice of each change of the run, not by a timer: the watch is set
    /// up before the run is read, so no change between the two is missed.
    pub async fn wait(
        &self,
        id: &str,
        mut progress: impl FnMut(&RunState),
    ) -> Result<RunState, WorkflowError> {
        let key = run_key(id);
        // A run that has ended already needs no watch (on JetStream a watch costs a
        // consumer made and deleted): one read answers.
        if let Some((run, _)) = self.patiently(|| self.store.get_run(&key)).await?
            && has_ended(&run)
        {
            progress(&run);
            return Ok(Arc::unwrap_or_clone(run));
        }
        let mut last: Option<Arc<RunState>> = None;
        let mut seen = 0;
        loop {
            let mut watch = self.patiently(|| self.store.watch(&key)).await?;
            let mut read = self.patiently(|| self.store.get_run(&key)).await?;
            loop {
                let (run, revision) = read.ok_or_else(|| WorkflowError::NoSuchRun(id.into()))?;
                // A change the read saw already may still be reported by the watch.
                if revision > seen {
                    seen = revision;
                    if last.as_deref() != Some(&*run) {
                        progress(&run);
                    }
                    if has_ended(&run) {
                        return Ok(Arc::unwrap_or_clone(run));
                    }
                    last = Some(run);
                }
                read = match tokio::time::timeout(WAIT_REREAD, watch.changed()).await {
                    Ok(Ok(Some(entry))) => Some((
                        Arc::new(super::backend::decode_run(&key, &entry.value)?),
                        entry.revision,
                    )),
                    Ok(Ok(None)) | Err(_) => self.patiently(|| self.store.get_run(&key)).await?,
                    Ok(Err(e)) => {
                        // Changes may have been missed: watch again, then read again.
                        tracing::debug!(run = %id, error = %e, "the watch of a run broke; watching again");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        break;
                    }
                };
            }
        }
    }

    /// A token no other attempt anywhere has: this scheduler's random prefix and a count.
    fn token(&self) -> String {
        let n = self
            .attempts
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        format!("{}-{n:x}", self.prefix)
    }

    /// The results this host stores from now on, as they are stored (a receiver that
    /// falls behind misses the oldest).
    pub fn events(&self) -> tokio::sync::broadcast::Receiver<StepEvent> {
        self.events.subscribe()
    }

    /// Starts consuming the steps of `route` on this host.
    pub async fn serve(self: &Arc<Self>, route: &str) -> Result<(), WorkflowError> {
        let mut stream = self.patiently(|| self.queue.consume(route)).await?;
        let me = self.clone();
        let route = route.to_string();
        let consumer = tokio::spawn(async move {
            while let Some(next) = stream.next().await {
                match next {
                    Ok(delivery) => {
                        let Ok(permit) = me.permits.clone().acquire_owned().await else {
                            break;
                        };
                        let worker = me.clone();
                        tokio::spawn(async move {
                            worker.handle(delivery).await;
                            drop(permit);
                        });
                    }
                    Err(e) => {
                        tracing::warn!(route = %route, error = %e, "step queue error; retrying");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                }
            }
        });
        lock(&self.consumers).push(consumer);
        Ok(())
    }

    /// Starts watching for steps whose actor no host serves: such a step fails, with an
    /// error naming the actor, once it has waited [`SchedulerConfig::no_host_timeout`]
    /// with no host serving its route. Every host may watch; the queue hands each
    /// message to one of them, and the failure is written with compare-and-set.
    pub fn watch_unserved(self: &Arc<Self>) {
        let me = self.clone();
        let timeout = self.config.no_host_timeout;
        let every = (timeout / 4).clamp(Duration::from_millis(50), Duration::from_secs(5));
        let watcher = tokio::spawn(async move {
            // Since when (Unix ms) this host has seen each route with messages and no host.
            let mut unserved: HashMap<String, u64> = HashMap::new();
            let mut ticks = tokio::time::interval(every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                if let Err(e) = me.sweep(&mut unserved, timeout).await {
                    tracing::debug!(error = %e, "cannot look for steps no host serves");
                }
            }
        });
        lock(&self.consumers).push(watcher);
    }

    /// One look at the routes holding messages: fails the steps that waited too long
    /// with no host serving them.
    async fn sweep(
        &self,
        unserved: &mut HashMap<String, u64>,
        timeout: Duration,
    ) -> Result<(), WorkflowError> {
        let backlog = self.queue.backlog().await?;
        unserved.retain(|route, _| backlog.contains(route));
        let timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        for route in backlog {
            if self.queue.served(&route).await? {
                unserved.remove(&route);
                continue;
            }
            let now = now_ms();
            let since = *unserved.entry(route.clone()).or_insert(now);
            if now.saturating_sub(since) < timeout_ms {
                continue;
            }
            let taken = self.queue.take(&route, 64).await?;
            // A host may have come in the meantime: it takes them.
            let served = !taken.is_empty() && self.queue.served(&route).await?;
            for delivery in taken {
                let waited = now_ms().saturating_sub(since.max(delivery.queued_ms()));
                if served || waited < timeout_ms {
                    let _ = delivery.nak(Duration::ZERO).await;
                } else {
                    self.fail_unserved(delivery, &route, timeout).await;
                }
            }
        }
        Ok(())
    }

    /// Fails the step of `delivery`, which waited `timeout` with no host serving `route`.
    async fn fail_unserved(&self, delivery: Box<dyn Delivery>, route: &str, timeout: Duration) {
        let msg = delivery.message().clone();
        let delivered = delivery.delivered();
        let key = run_key(&msg.run);
        let read = match self.patiently(|| self.store.get_run(&key)).await {
            Ok(read) => read,
            Err(e) => {
                tracing::warn!(run = %msg.run, step = %msg.step, error = %e, "cannot read the run of a step no host serves");
                let _ = delivery.nak(Duration::ZERO).await;
                return;
            }
        };
        let decision = read
            .as_ref()
            .map(|(run, _)| would_claim(run, &msg.step, "", delivered).0);
        match (decision, read) {
            (Some(Claim::Run), Some((run, revision))) => {
                let workflow = self.workflow(&run).await.ok();
                let error = format!(
                    "no host runs actor {}: the step waited {timeout:?} (no_host_timeout) with \
                     no host serving route {route}; start a host that loads it, then submit \
                     the run again",
                    route_actor(route)
                );
                tracing::warn!(run = %msg.run, step = %msg.step, %error, "step failed");
                let recorded = self
                    .modify_from(&msg.run, Some((run, revision)), |run| {
                        fail_unserved_step(run, workflow.as_deref(), &msg.step, delivered, &error)
                    })
                    .await;
                match recorded {
                    Ok(Some((Recorded::Advance(next), run, _))) => {
                        if let Some(s) = run.steps.get(&msg.step) {
                            let _ = self.events.send(StepEvent {
                                run: run.id.clone(),
                                step: msg.step.clone(),
                                status: s.status,
                                run_status: run.status,
                            });
                        }
                        let published = self.publish(&run.id, &next).await;
                        self.settle(delivery, published).await;
                    }
                    Ok(_) => {
                        let _ = delivery.ack().await;
                    }
                    Err(e) => {
                        tracing::warn!(run = %msg.run, step = %msg.step, error = %e, "cannot fail a step no host serves");
                        let _ = delivery.nak(Duration::ZERO).await;
                    }
                }
            }
            (Some(Claim::Done), Some((run, _))) => {
                self.settle(delivery, self.publish_queued(&run).await).await;
            }
            (Some(Claim::Ignore), _) => {
                let _ = delivery.ack().await;
            }
            (Some(Claim::Stale), _) => drop(delivery),
            _ => {
                // The run is not stored (yet): drop the message once its submitter would
                // have given up, as a host would.
                let grace = self.config.patience + UNKNOWN_RUN_RETRY * 4;
                let age = now_ms().saturating_sub(delivery.queued_ms());
                if u128::from(age) > grace.as_millis() {
                    let _ = delivery.ack().await;
                } else {
                    let _ = delivery.nak(Duration::ZERO).await;
                }
            }
        }
    }

    /// Stops consuming; steps in progress are abandoned unacknowledged, so the queue
    /// hands them to another host.
    pub fn stop(&self) {
        self.permits.close();
        for c in lock(&self.consumers).drain(..) {
            c.abort();
        }
    }

    async fn handle(&self, delivery: Box<dyn Delivery>) {
        let msg = delivery.message().clone();
        let token = self.token();
        let host = self.config.host.clone();
        let delivered = delivery.delivered();
        let started_ms = now_ms();
        // Decide without writing: a short step is claimed by the write of its result.
        let key = run_key(&msg.run);
        let decide = || async {
            let read = self.patiently(|| self.store.get_run(&key)).await?;
            Ok::<_, WorkflowError>(read.map(|(run, revision)| {
                (
                    would_claim(&run, &msg.step, &token, delivered).0,
                    run,
                    revision,
                )
            }))
        };
        let mut decided = decide().await;
        // A run's first steps are queued just before it is stored: give the store a moment.
        let mut pause = Duration::ZERO;
        while matches!(decided, Ok(None) | Ok(Some((Claim::Early, _, _))))
            && pause <= UNKNOWN_RUN_WAIT
        {
            if pause.is_zero() {
                tokio::task::yield_now().await;
                pause = Duration::from_millis(1);
            } else {
                tokio::time::sleep(pause).await;
                pause *= 2;
            }
            decided = decide().await;
        }
        let (run, revision) = match decided {
            Ok(Some((Claim::Run, run, revision))) => (run, revision),
            Ok(Some((Claim::Done, run, _))) => {
                self.settle(delivery, self.publish_queued(&run).await).await;
                return;
            }
            Ok(Some((Claim::Ignore, _, _))) => {
                let _ = delivery.ack().await;
                return;
            }
            Ok(Some((Claim::Stale, _, _))) => {
                tracing::debug!(run = %msg.run, step = %msg.step, "stale delivery dropped");
                return;
            }
            Ok(Some((Claim::Early, _, _))) | Ok(None) => {
                // Its submitter may still be storing it (retrying while the store is
                // away), or may have died after queueing, or the read came from a copy
                // that lags: ask again later, and drop the message once the submitter
                // would have given up.
                let grace = self.config.patience + UNKNOWN_RUN_RETRY * 4;
                let deliveries = grace.as_secs() / UNKNOWN_RUN_RETRY.as_secs().max(1);
                if delivered <= deliveries {
                    tracing::debug!(run = %msg.run, step = %msg.step, delivered, "a step of a run not stored yet");
                    let _ = delivery.nak(UNKNOWN_RUN_RETRY).await;
                } else {
                    tracing::warn!(run = %msg.run, step = %msg.step, "a step of a run that was never stored; dropped");
                    let _ = delivery.ack().await;
                }
                return;
            }
            Err(e) => {
                tracing::warn!(run = %msg.run, step = %msg.step, error = %e, "cannot claim the step; it will be redelivered");
                let _ = delivery.nak(Duration::from_secs(1)).await;
                return;
            }
        };
        let workflow = self.workflow(&run).await;
        let mut known = (Arc::clone(&run), revision);
        let outcome = match &workflow {
            Ok(w) => {
                let exec = self.execute(w, &run, &msg.step, delivery.as_ref());
                tokio::pin!(exec);
                let claim_timer = tokio::time::sleep(self.config.claim_after);
                tokio::pin!(claim_timer);
                let mut claimed = false;
                loop {
                    tokio::select! {
                        o = &mut exec => break o,
                        () = &mut claim_timer, if !claimed => {
                            // Still running: say so, so that status shows it and a host
                            // that dies now is taken over.
                            claimed = true;
                            let written = self
                                .modify_from(&msg.run, Some(known.clone()), |r| {
                                    claim(r, &msg.step, &token, &host, delivered)
                                })
                                .await;
                            if let Ok(Some((Claim::Run, r, rev))) = written {
                                known = (r, rev);
                            }
                        }
                    }
                }
            }
            Err(e) => Err((e.to_string(), false)),
        };
        if let Err(e) = &outcome {
            tracing::info!(run = %msg.run, step = %msg.step, error = %e.0, "step failed");
        }
        let workflow = workflow.ok();
        let recorded = self
            .modify_from(&msg.run, Some(known), |run| {
                let attempt = Attempt {
                    token: &token,
                    host: &host,
                    delivered,
                    started_ms,
                };
                record(run, workflow.as_deref(), &msg.step, &attempt, &outcome)
            })
            .await
            .map(|r| r.map(|(answer, run, _)| (answer, run)));
        if let Ok(Some((Recorded::Advance(_) | Recorded::Retry(_), run))) = &recorded
            && let Some(s) = run.steps.get(&msg.step)
        {
            let _ = self.events.send(StepEvent {
                run: run.id.clone(),
                step: msg.step.clone(),
                status: s.status,
                run_status: run.status,
            });
        }
        match recorded {
            Ok(Some((Recorded::Advance(next), run))) => {
                let published = self.publish(&run.id, &next).await;
                self.settle(delivery, published).await;
            }
            Ok(Some((Recorded::Retry(delay), _))) => {
                let _ = delivery.nak(delay).await;
            }
            Ok(Some((Recorded::Stale, _))) => {
                let _ = delivery.ack().await;
            }
            Ok(None) => {
                // The run was there when the step was claimed: a read that finds nothing
                // now may come from a copy of the store that has not caught up (a new
                // leader after a node died). Acknowledging would lose the result; the
                // redelivery reads again, and drops the message if the run is truly gone.
                tracing::warn!(run = %msg.run, step = %msg.step, "the run was not found when recording the step's result; it will be redelivered");
                let _ = delivery.nak(Duration::from_secs(1)).await;
            }
            Err(e) => {
                // Not acknowledged: the queue redelivers it, and the claim sees our token.
                tracing::warn!(run = %msg.run, step = %msg.step, error = %e, "cannot record the result; the step will be redelivered");
                drop(delivery);
            }
        }
    }

    /// Acknowledges after successors were published; otherwise leaves the message to be
    /// redelivered, which publishes them again.
    async fn settle(&self, delivery: Box<dyn Delivery>, published: Result<(), WorkflowError>) {
        match published {
            Ok(()) => {
                let _ = delivery.ack().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot queue the next steps; will retry");
                let _ = delivery.nak(Duration::from_secs(1)).await;
            }
        }
    }

    /// Runs one attempt of a step: renders its input, invokes its actor within its
    /// timeout, and keeps the delivery alive meanwhile. `Err` carries whether a retry
    /// could help.
    async fn execute(
        &self,
        workflow: &Workflow,
        run: &RunState,
        step_name: &str,
        delivery: &dyn Delivery,
    ) -> Result<Value, (String, bool)> {
        let step = workflow
            .steps
            .get(step_name)
            .ok_or_else(|| (format!("the workflow has no step {step_name:?}"), false))?;
        let input = step
            .input
            .render(run)
            .map_err(|e| (format!("cannot build the input: {e}"), false))?;
        let payload = rmp_serde::to_vec_named(&input)
            .map_err(|e| (format!("cannot encode the input: {e}"), false))?;
        let actor = route_actor(&run.steps[step_name].route);
        // The run and step, for the policy's decisions on the actor's capability calls.
        let here = crate::policy::WorkflowStep {
            run: run.id.clone(),
            step: step_name.to_string(),
        };
        let call = crate::policy::WORKFLOW_STEP
            .scope(here, self.runner.run(actor, &step.spec.operation, payload));
        let call = async {
            match step.timeout {
                Some(t) => tokio::time::timeout(t, call)
                    .await
                    .unwrap_or_else(|_| Err(format!("the step timed out after {t:?}"))),
                None => call.await,
            }
        };
        tokio::pin!(call);
        // The first signal after one interval (an interval's immediate first tick would
        // still wait for the timer's next millisecond).
        let every = self.config.progress_interval;
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        let result = loop {
            tokio::select! {
                r = &mut call => break r,
                _ = ticks.tick() => {
                    let _ = delivery.in_progress().await;
                }
            }
        };
        result
            .map(|bytes| output_value(&bytes))
            .map_err(|e| (e, true))
    }

    async fn publish_queued(&self, run: &RunState) -> Result<(), WorkflowError> {
        self.publish(&run.id, &run.queued()).await
    }

    async fn publish(&self, run: &str, steps: &[(String, String)]) -> Result<(), WorkflowError> {
        for (step, route) in steps {
            let message = StepMessage {
                run: run.to_string(),
                step: step.clone(),
            };
            let id = message_id(run, step);
            self.patiently(|| self.queue.publish(route, &message, &id))
                .await?;
        }
        Ok(())
    }

    /// Applies `change` to a run with compare-and-set, reading again after a conflict.
    /// `change` returns its answer and whether it changed the run; it must be idempotent,
    /// since a write whose acknowledgement was lost is retried.
    async fn modify<R>(
        &self,
        id: &str,
        change: impl FnMut(&mut RunState) -> (R, bool),
    ) -> Result<Option<(R, RunState)>, WorkflowError> {
        Ok(self
            .modify_from(id, None, change)
            .await?
            .map(|(answer, run, _)| (answer, Arc::unwrap_or_clone(run))))
    }

    /// [`Scheduler::modify`], starting from `known` (a state and its revision, as this host
    /// last wrote it) instead of reading, when given: if nobody changed the run since, that
    /// saves a read. Answers the revision written (or read, when nothing changed).
    async fn modify_from<R>(
        &self,
        id: &str,
        mut known: Option<(Arc<RunState>, u64)>,
        mut change: impl FnMut(&mut RunState) -> (R, bool),
    ) -> Result<Option<(R, Arc<RunState>, u64)>, WorkflowError> {
        let key = run_key(id);
        loop {
            let (run, revision) = match known.take() {
                Some(k) => k,
                None => match self.patiently(|| self.store.get_run(&key)).await? {
                    Some(read) => read,
                    None => return Ok(None),
                },
            };
            // A copy only when the store still shares it (the in-process store does).
            let mut run = Arc::unwrap_or_clone(run);
            let (answer, changed) = change(&mut run);
            let run = Arc::new(run);
            if !changed {
                return Ok(Some((answer, run, revision)));
            }
            match self
                .patiently(|| self.store.update_run(&key, run.clone(), revision))
                .await
            {
                Ok(written) => return Ok(Some((answer, run, written))),
                Err(BackendError::Conflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Retries an operation while the backend is unavailable, up to the patience.
    async fn patiently<T, F, Fut>(&self, mut op: F) -> Result<T, BackendError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, BackendError>>,
    {
        let give_up = tokio::time::Instant::now() + self.config.patience;
        let mut pause = Duration::from_millis(50);
        loop {
            match op().await {
                Err(BackendError::Unavailable(e)) if tokio::time::Instant::now() < give_up => {
                    tracing::debug!(error = %e, "workflow backend unavailable; retrying");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(2));
                }
                other => return other,
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// An actor's response as a JSON value: MessagePack decoded, else UTF-8 text, else the
/// bytes as an array of numbers.
pub fn output_value(bytes: &[u8]) -> Value {
    if bytes.is_empty() {
        return Value::Null;
    }
    let mut rest = bytes;
    let mut de = rmp_serde::Deserializer::new(&mut rest);
    if let Ok(v) = <Value as serde::Deserialize>::deserialize(&mut de)
        && rest.is_empty()
    {
        return v;
    }
    match std::str::from_utf8(bytes) {
        Ok(s) => Value::String(s.to_string()),
        Err(_) => Value::Array(bytes.iter().map(|b| Value::from(*b)).collect()),
    }
}

/// What claiming `step` would decide, and whether the claim must be written.
fn would_claim(run: &RunState, step: &str, token: &str, delivered: u64) -> (Claim, bool) {
    if run.status.is_final() {
        return (Claim::Ignore, false);
    }
    let Some(s) = run.steps.get(step) else {
        return (Claim::Ignore, false);
    };
    if s.token.as_deref() == Some(token) {
        // Our own claim, written before an acknowledgement was lost.
        return (Claim::Run, false);
    }
    match s.status {
        StepStatus::Running if delivered <= s.delivery => (Claim::Stale, false),
        StepStatus::Queued | StepStatus::Retrying | StepStatus::Running => (Claim::Run, true),
        StepStatus::Succeeded | StepStatus::Failed => (Claim::Done, false),
        StepStatus::Pending => (Claim::Early, false),
        StepStatus::Skipped | StepStatus::Cancelled => (Claim::Ignore, false),
    }
}

/// Claims `step` for this attempt, when [`would_claim`] says so.
fn claim(run: &mut RunState, step: &str, token: &str, host: &str, delivered: u64) -> (Claim, bool) {
    let (decision, writes) = would_claim(run, step, token, delivered);
    if writes && let Some(s) = run.steps.get_mut(step) {
        if s.status == StepStatus::Running {
            tracing::info!(run = %run.id, step, previous = ?s.host, "taking over a step whose host went silent");
        }
        s.status = StepStatus::Running;
        s.attempts += 1;
        s.token = Some(token.to_string());
        s.delivery = delivered;
        s.host = Some(host.to_string());
        s.started_ms = Some(now_ms());
    }
    (decision, writes)
}

/// The actor a route names: its public key or name.
fn route_actor(route: &str) -> &str {
    route
        .strip_prefix("key.")
        .or_else(|| route.strip_prefix("name."))
        .unwrap_or(route)
}

/// Fails a step that no host served, when it is still waiting (or its host went silent),
/// and applies its failure policy to the run.
fn fail_unserved_step(
    run: &mut RunState,
    workflow: Option<&Workflow>,
    step: &str,
    delivered: u64,
    error: &str,
) -> (Recorded, bool) {
    match would_claim(run, step, "", delivered).0 {
        Claim::Run => {}
        Claim::Done => return (Recorded::Advance(run.queued()), false),
        _ => return (Recorded::Stale, false),
    }
    let Some(s) = run.steps.get_mut(step) else {
        return (Recorded::Stale, false);
    };
    s.failures += 1;
    s.token = None;
    s.error = Some(error.to_string());
    fail_step(run, step, error, now_ms());
    (Recorded::Advance(next_steps(run, workflow)), true)
}

/// Marks `step` failed for good and, when its policy says so, the run with it.
fn fail_step(run: &mut RunState, step: &str, message: &str, now: u64) {
    let Some(s) = run.steps.get_mut(step) else {
        return;
    };
    s.status = StepStatus::Failed;
    s.finished_ms = Some(now);
    let fails_run = s.on_failure == super::spec::OnFailure::Fail;
    if fails_run && !run.status.is_final() {
        run.status = RunStatus::Failed;
        run.error = Some(format!("step {step} failed: {message}"));
        run.finished_ms = Some(now);
        run.cancel_waiting();
    }
}

/// After a step ended: queues the steps that became ready (answered with their routes)
/// and ends the run when every step is final.
fn next_steps(run: &mut RunState, workflow: Option<&Workflow>) -> Vec<(String, String)> {
    let next = run.advance();
    if !run.status.is_final() && run.all_final() {
        finish(run, workflow);
    }
    next.into_iter()
        .filter_map(|n| run.steps.get(&n).map(|s| (n, s.route.clone())))
        .collect()
}

/// Who ran an attempt, for recording it.
struct Attempt<'a> {
    token: &'a str,
    host: &'a str,
    delivered: u64,
    started_ms: u64,
}

fn record(
    run: &mut RunState,
    workflow: Option<&Workflow>,
    step: &str,
    attempt: &Attempt<'_>,
    outcome: &Result<Value, (String, bool)>,
) -> (Recorded, bool) {
    let Some(s) = run.steps.get_mut(step) else {
        return (Recorded::Stale, false);
    };
    if s.token.as_deref() != Some(attempt.token) {
        // Not claimed by us (the step was short): claim it with this write, under the same
        // rules as a claim, or drop the result.
        let free = match s.status {
            StepStatus::Queued | StepStatus::Retrying => true,
            StepStatus::Running => attempt.delivered > s.delivery,
            _ => false,
        };
        if !free || run.status.is_final() {
            return (Recorded::Stale, false);
        }
        s.status = StepStatus::Running;
        s.attempts += 1;
        s.token = Some(attempt.token.to_string());
        s.delivery = attempt.delivered;
        s.host = Some(attempt.host.to_string());
        s.started_ms = Some(attempt.started_ms);
    }
    if s.status != StepStatus::Running {
        // Recorded already, by a write whose acknowledgement was lost.
        return match s.status {
            StepStatus::Retrying => (Recorded::Retry(Duration::ZERO), false),
            _ => (Recorded::Advance(run.queued()), false),
        };
    }
    let now = now_ms();
    match outcome {
        Ok(value) => {
            s.status = StepStatus::Succeeded;
            s.output = Some(value.clone());
            s.error = None;
            s.finished_ms = Some(now);
        }
        Err((message, retryable)) => {
            s.failures += 1;
            s.error = Some(message.clone());
            if *retryable && s.failures < s.max_attempts && !run.status.is_final() {
                s.status = StepStatus::Retrying;
                let failures = s.failures;
                let delay = workflow
                    .and_then(|w| w.steps.get(step).map(|st| st.backoff(failures)))
                    .unwrap_or(Duration::from_secs(1));
                return (Recorded::Retry(delay), true);
            }
            fail_step(run, step, message, now);
        }
    }
    (Recorded::Advance(next_steps(run, workflow)), true)
}

/// Ends a run whose steps are all final: renders its outputs.
fn finish(run: &mut RunState, workflow: Option<&Workflow>) {
    run.finished_ms = Some(now_ms());
    let outputs = match workflow {
        Some(w) => w.outputs.as_ref().map(|t| t.render(run)).transpose(),
        None => Err("the workflow's spec could not be read".to_string()),
    };
    match outputs {
        Ok(v) => {
            run.status = RunStatus::Succeeded;
            run.outputs = v;
        }
        Err(e) => {
            run.status = RunStatus::Failed;
            run.error = Some(format!("cannot build the outputs: {e}"));
        }
    }
}

/// Whether a run is over for a waiter: final, with no step still running.
fn has_ended(run: &RunState) -> bool {
    run.status.is_final() && run.steps.values().all(|s| s.status != StepStatus::Running)
}
