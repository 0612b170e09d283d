//! The state of a run, as stored: the spec it runs, its inputs, and every step's status,
//! attempts, host, timings and output. Any host or the CLI can read it.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::spec::{OnFailure, Scope};

/// Where a step is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    /// Waiting for the steps it depends on.
    Pending,
    /// Its message is queued; a host will pick it up.
    Queued,
    /// A host is running it.
    Running,
    /// It failed and waits for its next attempt.
    Retrying,
    /// It finished; its output is stored.
    Succeeded,
    /// It failed for good.
    Failed,
    /// It will not run: a step it depends on did not succeed.
    Skipped,
    /// It will not run: the run was cancelled or failed first.
    Cancelled,
}

impl StepStatus {
    /// Whether the step will change no more.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            StepStatus::Succeeded
                | StepStatus::Failed
                | StepStatus::Skipped
                | StepStatus::Cancelled
        )
    }
}

/// Where a run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Steps are still to run.
    Running,
    /// Every step finished (a failed step with `on_failure: continue` counts as finished).
    Succeeded,
    /// A step failed, or the outputs could not be built.
    Failed,
    /// Someone cancelled it.
    Cancelled,
}

impl RunStatus {
    /// Whether the run will change no more.
    pub fn is_final(self) -> bool {
        self != RunStatus::Running
    }
}

/// One step of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StepState {
    /// Its position in the spec (for display).
    pub index: u32,
    /// The steps it waits for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends: Vec<String>,
    /// What its final failure does to the run.
    #[serde(default, skip_serializing_if = "is_fail")]
    pub on_failure: OnFailure,
    /// Attempts allowed in all.
    pub max_attempts: u32,
    /// Where it is.
    pub status: StepStatus,
    /// The queue route of its actor (`key.<public key>` or `name.<name>`).
    pub route: String,
    /// Attempts started (a host that died mid-step leaves one that did not finish).
    pub attempts: u32,
    /// Attempts that failed.
    pub failures: u32,
    /// The token of its current attempt: whoever holds it may record the result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// How many times the queue had delivered the message of its current attempt: a
    /// delivery with no higher count is a stale copy of a message another host took over.
    #[serde(default)]
    pub delivery: u64,
    /// The host running it, or that ran it last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// When its last attempt started (Unix milliseconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_ms: Option<u64>,
    /// When it finished (Unix milliseconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_ms: Option<u64>,
    /// Its output, once it succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<Value>,
    /// The error of its last failed attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

fn is_fail(f: &OnFailure) -> bool {
    *f == OnFailure::Fail
}

/// A run, as stored under `run.<id>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RunState {
    /// The run ID.
    pub id: String,
    /// The workflow's name.
    pub workflow: String,
    /// The store key of the spec it runs (`spec.<hash>`, stored once for all its runs),
    /// so any host can schedule it.
    pub spec: String,
    /// The inputs, defaults included.
    pub inputs: BTreeMap<String, Value>,
    /// Where it is.
    pub status: RunStatus,
    /// When it was submitted (Unix milliseconds).
    pub created_ms: u64,
    /// When it ended (Unix milliseconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_ms: Option<u64>,
    /// Its steps, by name.
    pub steps: BTreeMap<String, StepState>,
    /// Its outputs, once it succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outputs: Option<Value>,
    /// Why it failed or was cancelled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Scope for RunState {
    fn input(&self, name: &str) -> Option<&Value> {
        self.inputs.get(name)
    }

    fn output(&self, step: &str) -> Option<&Value> {
        let s = self.steps.get(step)?;
        match s.status {
            StepStatus::Succeeded => s.output.as_ref(),
            StepStatus::Failed => Some(&Value::Null),
            _ => None,
        }
    }

    fn error(&self, step: &str) -> Option<&str> {
        let s = self.steps.get(step)?;
        (s.status == StepStatus::Failed)
            .then_some(s.error.as_deref())
            .flatten()
    }

    fn run_id(&self) -> &str {
        &self.id
    }

    fn workflow(&self) -> &str {
        &self.workflow
    }
}

impl StepState {
    /// A step waiting for its run to reach it: the `index`-th of its spec, on `route`.
    pub fn pending(
        index: usize,
        spec: &super::spec::StepSpec,
        max_attempts: u32,
        route: String,
    ) -> Self {
        StepState {
            index: u32::try_from(index).unwrap_or(u32::MAX),
            depends: spec.depends.clone(),
            on_failure: spec.on_failure,
            max_attempts,
            status: StepStatus::Pending,
            route,
            attempts: 0,
            failures: 0,
            token: None,
            delivery: 0,
            host: None,
            started_ms: None,
            finished_ms: None,
            output: None,
            error: None,
        }
    }
}

impl RunState {
    /// Whether `step` counts as done for the steps after it: it succeeded, or it failed
    /// with `on_failure: continue`.
    fn done_for_dependents(&self, step: &str) -> Option<bool> {
        let s = self.steps.get(step)?;
        match s.status {
            StepStatus::Succeeded => Some(true),
            StepStatus::Failed if s.on_failure == OnFailure::Continue => Some(true),
            status if status.is_final() => Some(false),
            _ => None,
        }
    }

    /// Moves pending steps whose dependencies are done to `Queued` (returned, to publish),
    /// and skips those that can never run.
    pub fn advance(&mut self) -> Vec<String> {
        if self.status.is_final() {
            return Vec::new();
        }
        let mut queued = Vec::new();
        let names: Vec<String> = self.steps.keys().cloned().collect();
        loop {
            let mut changed = false;
            for name in &names {
                let step = &self.steps[name];
                if step.status != StepStatus::Pending {
                    continue;
                }
                let deps: Vec<Option<bool>> = step
                    .depends
                    .iter()
                    .map(|d| self.done_for_dependents(d))
                    .collect();
                let next = if deps.contains(&Some(false)) {
                    Some(StepStatus::Skipped)
                } else if deps.iter().all(|d| *d == Some(true)) {
                    Some(StepStatus::Queued)
                } else {
                    None
                };
                if let Some(next) = next {
                    if let Some(s) = self.steps.get_mut(name) {
                        s.status = next;
                        if next == StepStatus::Skipped {
                            s.finished_ms = Some(now_ms());
                        }
                    }
                    if next == StepStatus::Queued {
                        queued.push(name.clone());
                    }
                    changed = true;
                }
            }
            if !changed {
                break;
            }
        }
        queued
    }

    /// Ends every step that has not started yet, as `Cancelled`.
    pub fn cancel_waiting(&mut self) {
        let now = now_ms();
        for s in self.steps.values_mut() {
            if matches!(
                s.status,
                StepStatus::Pending | StepStatus::Queued | StepStatus::Retrying
            ) {
                s.status = StepStatus::Cancelled;
                s.finished_ms = Some(now);
            }
        }
    }

    /// Whether every step is final.
    pub fn all_final(&self) -> bool {
        self.steps.values().all(|s| s.status.is_final())
    }

    /// Step names in the order of the spec.
    pub fn step_order(&self) -> Vec<&String> {
        let mut names: Vec<&String> = self.steps.keys().collect();
        names.sort_by_key(|n| self.steps[*n].index);
        names
    }

    /// Steps that are queued, with their routes (to publish again after a crash).
    pub fn queued(&self) -> Vec<(String, String)> {
        self.steps
            .iter()
            .filter(|(_, s)| s.status == StepStatus::Queued)
            .map(|(n, s)| (n.clone(), s.route.clone()))
            .collect()
    }
}
