//! Server-sent events: what changes, as it changes, for the dashboard and for anyone with
//! `curl -N`. Each stream ends when the client goes away or the endpoint shuts down.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::{Stream, StreamExt};
use serde::Serialize;
use tokio::sync::{broadcast, mpsc};
use utoipa::ToSchema;

use super::AdminState;
use super::api::{ApiError, workflows_of};
use crate::policy::Denial;
use crate::up::control::HostEvent;
use crate::workflow::state::{RunState, RunStatus, StepStatus};

/// One event of `/v1/events`; its `type` is also the SSE event name.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AdminEvent {
    /// A step result this host stored.
    Step {
        /// The run.
        run: String,
        /// The step.
        step: String,
        /// What the step became.
        status: StepStatus,
        /// The run's status after it.
        run_status: RunStatus,
    },
    /// A run started or cancelled through this endpoint.
    Run {
        /// The run.
        run: String,
        /// Its status.
        status: RunStatus,
    },
    /// An event of a host of the lattice (heartbeats, actors and links started, stopped,
    /// changed).
    Lattice(HostEvent),
    /// A policy denial on this host.
    Denial(Denial),
    /// A change made through this endpoint (`actor_scaled`, `actor_stopped`, `link_added`,
    /// `link_removed`).
    Host {
        /// What happened.
        kind: String,
        /// What it concerns.
        detail: serde_json::Value,
    },
}

impl AdminEvent {
    fn name(&self) -> &'static str {
        match self {
            AdminEvent::Step { .. } => "step",
            AdminEvent::Run { .. } => "run",
            AdminEvent::Lattice(_) => "lattice",
            AdminEvent::Denial(_) => "denial",
            AdminEvent::Host { .. } => "host",
        }
    }

    fn to_sse(&self) -> Event {
        Event::default()
            .event(self.name())
            .json_data(self)
            .unwrap_or_else(|_| Event::default().comment("unencodable event"))
    }
}

/// How often an idle stream says it is alive (proxies close silent connections).
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// Forwards a broadcast into `tx` until either side ends; a slow reader misses the oldest.
fn forward<T: Clone + Send + 'static>(
    mut rx: broadcast::Receiver<T>,
    tx: mpsc::Sender<AdminEvent>,
    map: impl Fn(T) -> Option<AdminEvent> + Send + 'static,
) {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = tx.closed() => break,
                got = rx.recv() => match got {
                    Ok(item) => {
                        if let Some(event) = map(item)
                            && tx.send(event).await.is_err()
                        {
                            break;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => break,
                },
            }
        }
    });
}

/// A stream of `rx`'s items as SSE events, ending when the endpoint shuts down.
fn sse_of(
    state: &AdminState,
    rx: mpsc::Receiver<Event>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>> + use<>> {
    let mut closing = state.closing.clone();
    let closed = async move {
        let _ = closing.wait_for(|c| *c).await;
    };
    let events = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|e| (Ok::<_, Infallible>(e), rx))
    })
    .take_until(Box::pin(closed));
    Sse::new(events).keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
}

/// `GET /v1/events`: step results, lattice events, policy denials and changes made here.
#[utoipa::path(
    get,
    path = "/v1/events",
    tag = "events",
    responses((status = 200, description = "A stream of server-sent events; each `data` is an `AdminEvent` whose `type` is the event's name", content_type = "text/event-stream", body = AdminEvent))
)]
pub(super) async fn all(State(state): State<Arc<AdminState>>) -> Response {
    let (tx, mut rx) = mpsc::channel::<AdminEvent>(256);
    if let Some(scheduler) = &state.config.workflows {
        forward(scheduler.events(), tx.clone(), |e| {
            Some(AdminEvent::Step {
                run: e.run,
                step: e.step,
                status: e.status,
                run_status: e.run_status,
            })
        });
    }
    forward(state.changes.subscribe(), tx.clone(), Some);
    if let Some(enforcer) = state.runtime.host().enforcer() {
        forward(enforcer.denials().subscribe(), tx.clone(), |d| {
            Some(AdminEvent::Denial(d))
        });
    }
    if let Some(lattice) = &state.config.lattice {
        match lattice.events().await {
            Ok(stream) => {
                let tx = tx.clone();
                tokio::spawn(async move {
                    let mut stream = std::pin::pin!(stream);
                    loop {
                        tokio::select! {
                            () = tx.closed() => break,
                            next = stream.next() => match next {
                                Some(e) => {
                                    if tx.send(AdminEvent::Lattice(e)).await.is_err() {
                                        break;
                                    }
                                }
                                None => break,
                            },
                        }
                    }
                });
            }
            Err(e) => tracing::warn!(error = %e, "the event stream has no lattice events"),
        }
    }
    drop(tx);
    let (out, events) = mpsc::channel(64);
    tokio::spawn(async move {
        while let Some(event) = rx.recv().await {
            if out.send(event.to_sse()).await.is_err() {
                break;
            }
        }
    });
    sse_of(&state, events).into_response()
}

/// `GET /v1/runs/{id}/events`: the run's whole state, now and after each change, until
/// it ends (then the stream closes).
#[utoipa::path(
    get,
    path = "/v1/runs/{id}/events",
    tag = "runs",
    params(("id" = String, Path, description = "The run's ID")),
    responses(
        (status = 200, description = "Server-sent events named `run`, each the run's state", content_type = "text/event-stream", body = RunState),
        (status = 404, description = "No such run, or no workflows on this host", content_type = "text/plain", body = String),
        (status = 503, description = "The run store does not answer", content_type = "text/plain", body = String),
    )
)]
pub(super) async fn run(
    State(state): State<Arc<AdminState>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let scheduler = workflows_of(&state)?.clone();
    // Fail now, with a status, when there is no such run.
    scheduler.status(&id).await?;
    let (tx, events) = mpsc::channel::<Event>(64);
    tokio::spawn(async move {
        let sender = tx.clone();
        let watch = scheduler.wait(&id, move |run| {
            let event = Event::default()
                .event("run")
                .json_data(run)
                .unwrap_or_else(|_| Event::default().comment("unencodable run"));
            // A reader that falls behind misses intermediate states, never the last.
            let _ = sender.try_send(event);
        });
        tokio::select! {
            () = tx.closed() => {}
            ended = watch => {
                if let Ok(run) = ended
                    && let Ok(event) = Event::default().event("end").json_data(&run)
                {
                    let _ = tx.send(event).await;
                }
            }
        }
    });
    Ok(sse_of(&state, events).into_response())
}
