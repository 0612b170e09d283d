//! Workflows in a running host: the scheduler on the configured backend, a consumer per
//! loaded actor, a watch on steps no host serves, and the trigger subjects.
//!
//! A trigger subscribes in a queue group named after its workflow's spec, so hosts that
//! share a trigger (the same subject and workflow) start one run per message between them.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;
use tokio::task::JoinHandle;

use super::ConfigError;
use super::config::{HostConfig, WorkflowBackendSpec, WorkflowSettings};
use super::runtime::Runtime;
use crate::workflow::backend::{ActorRoute, RunStore, StepQueue, route};
use crate::workflow::jetstream::{JetStreamBackend, JetStreamOptions};
use crate::workflow::memory::MemoryBackend;
use crate::workflow::routes::{is_token, resolve_routes};
use crate::workflow::scheduler::{Scheduler, SchedulerConfig, StepRunner};
use crate::workflow::spec::Workflow;
use sigil_providers::messaging::Bus;

/// Runs steps on this host's actors.
struct RuntimeRunner(Arc<Runtime>);

#[async_trait]
impl StepRunner for RuntimeRunner {
    async fn run(&self, actor: &str, operation: &str, payload: Vec<u8>) -> Result<Vec<u8>, String> {
        self.0
            .invoke(actor, operation, payload)
            .await
            .map_err(|e| e.to_string())
    }
}

/// The backend a configuration names, connected.
pub enum Backend {
    /// In this process.
    Memory(MemoryBackend),
    /// On NATS JetStream.
    Nats(Box<JetStreamBackend>),
}

impl Backend {
    /// Connects the backend of `settings`.
    pub async fn connect(settings: &WorkflowSettings) -> Result<Backend, String> {
        Ok(match &settings.backend {
            WorkflowBackendSpec::Memory => Backend::Memory(MemoryBackend::new()),
            WorkflowBackendSpec::Nats { url } => {
                let options = JetStreamOptions {
                    stream: settings.stream.clone(),
                    subject_prefix: settings.subject_prefix.clone(),
                    bucket: settings.bucket.clone(),
                    ack_wait: settings.ack_wait,
                    pull_batch: settings.max_concurrent.clamp(1, 16),
                    replicas: settings.replicas,
                    ..JetStreamOptions::default()
                };
                Backend::Nats(Box::new(
                    JetStreamBackend::connect(url, options)
                        .await
                        .map_err(|e| format!("workflows: cannot use NATS at {url}: {e}"))?,
                ))
            }
        })
    }

    fn parts(&self) -> (Arc<dyn RunStore>, Arc<dyn StepQueue>) {
        match self {
            Backend::Memory(m) => (Arc::new(m.clone()), Arc::new(m.clone())),
            Backend::Nats(n) => (Arc::new((**n).clone()), Arc::new((**n).clone())),
        }
    }

    /// A scheduler on this backend (one that runs steps on `runner`).
    pub fn scheduler(
        &self,
        runner: Arc<dyn StepRunner>,
        config: SchedulerConfig,
    ) -> Arc<Scheduler> {
        let (store, queue) = self.parts();
        Scheduler::new(store, queue, runner, config)
    }
}

/// A runner for a process that only submits and watches runs.
pub struct NoRunner;

#[async_trait]
impl StepRunner for NoRunner {
    async fn run(&self, actor: &str, _: &str, _: Vec<u8>) -> Result<Vec<u8>, String> {
        Err(format!("this process runs no steps (asked for {actor})"))
    }
}

/// The workflow service of a running host.
pub struct WorkflowService {
    /// The scheduler.
    pub scheduler: Arc<Scheduler>,
    triggers: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for WorkflowService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkflowService")
            .field("scheduler", &self.scheduler)
            .finish_non_exhaustive()
    }
}

impl WorkflowService {
    /// Stops the triggers and the step consumers.
    pub fn stop(&self) {
        for t in &self.triggers {
            t.abort();
        }
        self.scheduler.stop();
    }
}

/// The step routes of an actor: by key, and by name when its name can be one.
fn actor_routes(actor: &crate::Actor) -> Vec<String> {
    let mut routes = vec![route(&ActorRoute::Key(actor.subject().to_string()))];
    if is_token(actor.name()) {
        routes.push(route(&ActorRoute::Name(actor.name().to_string())));
    }
    routes
}

/// Consumes the steps of every loaded actor, by key and by name.
pub async fn serve_actors(scheduler: &Arc<Scheduler>, runtime: &Runtime) -> Result<(), String> {
    for actor in runtime.host().actors() {
        for r in actor_routes(&actor) {
            scheduler
                .serve(&r)
                .await
                .map_err(|e| format!("workflows: cannot consume {r}: {e}"))?;
        }
    }
    Ok(())
}

/// Consumes the steps of actors started while the host runs, once per route.
struct ServeStarted {
    scheduler: std::sync::Weak<Scheduler>,
    served: tokio::sync::Mutex<std::collections::HashSet<String>>,
}

#[async_trait]
impl super::runtime::ActorStarted for ServeStarted {
    async fn started(&self, actor: &Arc<crate::Actor>) {
        let Some(scheduler) = self.scheduler.upgrade() else {
            return;
        };
        let mut served = self.served.lock().await;
        for r in actor_routes(actor) {
            if served.contains(&r) {
                continue;
            }
            match scheduler.serve(&r).await {
                Ok(()) => {
                    served.insert(r);
                }
                Err(e) => tracing::warn!(actor = actor.name(), route = %r, error = %e,
                    "workflows: cannot consume the steps of a started actor"),
            }
        }
    }
}

/// A trigger's workflow, read, and the route of each of its steps (the modules it names
/// read or pulled, and verified); errors at the trigger's line.
pub(super) async fn trigger_workflow(
    config: &HostConfig,
    runtime: &Runtime,
    t: &super::config::Located<super::config::Trigger>,
) -> Result<(Workflow, std::collections::HashMap<String, String>), ConfigError> {
    let at = |m: String| config.error_at(t.line, m);
    let workflow = Workflow::from_file(&t.value.workflow).map_err(|e| at(e.0))?;
    let base = t.value.workflow.parent().unwrap_or(Path::new("."));
    let routes = resolve_routes(
        &workflow,
        base,
        &config.policy,
        runtime.module_registry(),
        |_, _| Ok(()),
    )
    .await
    .map_err(|e| at(e.0))?;
    Ok((workflow, routes))
}

/// A workflow a host offers to start by name (`[workflows] specs`).
#[derive(Debug, Clone)]
pub struct StoredWorkflow {
    /// Its spec file.
    pub file: std::path::PathBuf,
    /// The checked workflow.
    pub workflow: Arc<Workflow>,
    /// The route of each step.
    pub routes: std::collections::HashMap<String, String>,
}

/// Reads the `[workflows] specs` and loads on `runtime` the modules their steps name by
/// file or reference (once each), so that the host serves them; errors at the spec's line.
pub(super) async fn load_library(
    config: &HostConfig,
    runtime: &Runtime,
) -> Result<Vec<StoredWorkflow>, ConfigError> {
    let mut library: Vec<StoredWorkflow> = Vec::new();
    for spec in &config.workflows.specs {
        let at = |m: String| config.error_at(spec.line, m);
        let workflow = Workflow::from_file(&spec.value).map_err(|e| at(e.0))?;
        if let Some(other) = library
            .iter()
            .find(|w| w.workflow.spec.name == workflow.spec.name)
        {
            return Err(at(format!(
                "{} names workflow {:?}, as {} does; workflows are started by name, so each \
                 needs its own",
                spec.value.display(),
                workflow.spec.name,
                other.file.display()
            )));
        }
        let base = spec.value.parent().unwrap_or(Path::new("."));
        let mut modules: Vec<(String, Arc<[u8]>)> = Vec::new();
        let routes = resolve_routes(
            &workflow,
            base,
            &config.policy,
            runtime.module_registry(),
            |origin, bytes| {
                modules.push((origin.to_string(), bytes));
                Ok(())
            },
        )
        .await
        .map_err(|e| at(format!("{}: {}", spec.value.display(), e.0)))?;
        for (origin, bytes) in modules {
            if runtime.actor_with_origin(&origin).is_some() {
                continue;
            }
            let actor = runtime
                .load_actor(bytes)
                .await
                .map_err(|e| at(format!("actor {origin} refused: {e}")))?;
            runtime.set_origin(actor.subject(), origin);
        }
        library.push(StoredWorkflow {
            file: spec.value.clone(),
            workflow: Arc::new(workflow),
            routes,
        });
    }
    Ok(library)
}

/// Starts the workflow service of a host.
pub async fn start(
    runtime: &Arc<Runtime>,
    config: &HostConfig,
    bus: &Bus,
) -> Result<WorkflowService, ConfigError> {
    let settings = &config.workflows;
    let backend = Backend::connect(settings)
        .await
        .map_err(|e| config.error_for("workflows.nats", e))?;
    let scheduler = backend.scheduler(
        Arc::new(RuntimeRunner(runtime.clone())),
        SchedulerConfig {
            host: config.name.clone(),
            max_concurrent: settings.max_concurrent,
            progress_interval: (settings.ack_wait / 3).max(std::time::Duration::from_millis(100)),
            no_host_timeout: settings.no_host_timeout,
            ..SchedulerConfig::default()
        },
    );
    serve_actors(&scheduler, runtime)
        .await
        .map_err(|e| config.error_for("workflows.nats", e))?;
    runtime.on_actor_started(Arc::new(ServeStarted {
        scheduler: Arc::downgrade(&scheduler),
        served: tokio::sync::Mutex::new(
            runtime
                .host()
                .actors()
                .iter()
                .flat_map(|a| actor_routes(a))
                .collect(),
        ),
    }));
    scheduler.watch_unserved();

    let mut triggers = Vec::new();
    for t in &settings.triggers {
        let trigger = &t.value;
        let at = |m: String| config.error_at(t.line, m);
        let (workflow, routes) = trigger_workflow(config, runtime, t).await?;
        let group = trigger_group(&workflow).map_err(at)?;
        let (workflow, routes) = (Arc::new(workflow), Arc::new(routes));
        let scheduler = scheduler.clone();
        let subject = trigger.subject.clone();
        let handle = match &backend {
            Backend::Nats(n) => {
                let client = n.client().clone();
                // One member of the group gets each message: one run per message however
                // many hosts share the trigger.
                let mut sub = client
                    .queue_subscribe(subject.clone(), group)
                    .await
                    .map_err(|e| at(format!("cannot subscribe to trigger {subject:?}: {e}")))?;
                // Once the server has the subscription, the first message finds it.
                sigil_providers::plugin::wire::settle(&client)
                    .await
                    .map_err(|e| at(format!("cannot subscribe to trigger {subject:?}: {e}")))?;
                tokio::spawn(async move {
                    use futures::StreamExt;
                    while let Some(msg) = sub.next().await {
                        let answer = start_run(&scheduler, &workflow, &routes, &msg.payload).await;
                        if let Some(reply) = msg.reply {
                            let _ = client.publish(reply, answer.into()).await;
                        }
                    }
                })
            }
            Backend::Memory(_) => {
                let mut sub = bus
                    .subscribe(&subject, Some(&group))
                    .map_err(|e| at(format!("cannot subscribe to trigger {subject:?}: {e}")))?;
                let bus = bus.clone();
                tokio::spawn(async move {
                    while let Some(msg) = sub.next().await {
                        let answer = start_run(&scheduler, &workflow, &routes, &msg.body).await;
                        if let Some(reply) = msg.reply_to {
                            let _ = bus.publish(&reply, None, answer);
                        }
                    }
                })
            }
        };
        tracing::info!(subject = %trigger.subject, workflow = %workflow_name(&trigger.workflow), "workflow trigger ready");
        triggers.push(handle);
    }
    Ok(WorkflowService {
        scheduler,
        triggers,
    })
}

/// The queue group of a trigger of `workflow`: named after its spec's hash, so hosts with
/// the same workflow on a subject share each message, and different workflows on one
/// subject each start their own run.
fn trigger_group(workflow: &Workflow) -> Result<String, String> {
    let (key, _) = workflow.stored_spec()?;
    Ok(format!(
        "sigil-trigger-{}",
        key.strip_prefix("spec.").unwrap_or(key)
    ))
}

fn workflow_name(path: &Path) -> String {
    path.display().to_string()
}

/// Starts a run from a trigger message (a JSON object of inputs; empty means none);
/// answers `{"run": ID}` or `{"error": ...}`.
async fn start_run(
    scheduler: &Scheduler,
    workflow: &Workflow,
    routes: &std::collections::HashMap<String, String>,
    body: &[u8],
) -> Vec<u8> {
    let inputs: Result<BTreeMap<String, Value>, String> =
        if body.iter().all(u8::is_ascii_whitespace) {
            Ok(BTreeMap::new())
        } else {
            serde_json::from_slice(body)
                .map_err(|e| format!("the trigger message is not a JSON object of inputs: {e}"))
        };
    let answer = match inputs {
        Ok(inputs) => match scheduler.submit(workflow, inputs, routes).await {
            Ok(id) => serde_json::json!({ "run": id }),
            Err(e) => serde_json::json!({ "error": e.to_string() }),
        },
        Err(e) => serde_json::json!({ "error": e }),
    };
    if let Some(e) = answer.get("error") {
        tracing::warn!(workflow = %workflow.spec.name, error = %e, "trigger refused");
    }
    answer.to_string().into_bytes()
}
