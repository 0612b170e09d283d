//! The admin endpoint, on axum: health, readiness, Prometheus metrics, the host's and the
//! lattice's inventory, links, workflow runs, policy denials, a stream of changes, the
//! OpenAPI document of all of it, and the dashboard.
//!
//! | method | path | answer |
//! |---|---|---|
//! | GET | `/healthz` | `200 ok` while the process serves (liveness) |
//! | GET | `/readyz` | `200` when every provider is healthy and the host is not draining, else `503`; JSON either way |
//! | GET | `/metrics` | Prometheus text format |
//! | GET | `/v1/status` | this host: name, labels, uptime, actors, providers, links |
//! | GET | `/v1/hosts` | every host of the lattice (this one alone off a lattice), with actors and their verified claims |
//! | GET | `/v1/actors` | this host's actors with their verified claims |
//! | POST | `/v1/actors/{actor}/scale` | limit an actor's invocations at once |
//! | DELETE | `/v1/actors/{actor}` | stop an actor |
//! | GET, PUT | `/v1/links` | the links; add one |
//! | DELETE | `/v1/links/{actor}/{contract_id}/{link_name}` | remove a link |
//! | GET, POST | `/v1/runs` | workflow runs (filters, paging); start one |
//! | GET, DELETE | `/v1/runs/{id}` | a run's state; cancel it |
//! | GET | `/v1/runs/{id}/graph` | a run's steps, placed as a graph |
//! | GET | `/v1/runs/{id}/steps/{step}` | one step: its state and its input |
//! | GET | `/v1/runs/{id}/events` | server-sent events: the run's state at each change, until it ends |
//! | GET | `/v1/workflows` | the workflows this host offers to start (`[workflows] specs`) |
//! | POST | `/v1/workflows/{name}/runs` | start one with inputs |
//! | GET | `/v1/denials` | recent policy denials |
//! | GET | `/v1/events` | server-sent events: step results, lattice events, denials, changes made here |
//! | GET | `/v1/openapi.json` | the OpenAPI 3 document |
//! | GET | `/` | the dashboard |
//!
//! Reads need nothing; every change needs `Authorization: Bearer <admin token>`, compared in
//! constant time (one layer for all routes).

mod api;
mod dashboard;
mod events;
pub mod graph;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;

use super::control::ControlClient;
use super::runtime::Runtime;
use super::workflows::StoredWorkflow;
use crate::workflow::scheduler::Scheduler;

pub use api::ApiDoc;
pub use events::AdminEvent;

/// What the admin endpoint serves, besides the runtime.
#[derive(Default)]
pub struct AdminConfig {
    /// The host's name.
    pub name: String,
    /// The host's labels.
    pub labels: BTreeMap<String, String>,
    /// The token changes need.
    pub token: String,
    /// The workflow scheduler, when the host runs workflows.
    pub workflows: Option<Arc<Scheduler>>,
    /// The workflows offered by name.
    pub library: Vec<StoredWorkflow>,
    /// The control interface's client, when the host is on a lattice: the lattice's
    /// inventory and events.
    pub lattice: Option<Arc<ControlClient>>,
    /// This host's ID on the lattice.
    pub host_id: Option<String>,
}

impl std::fmt::Debug for AdminConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminConfig")
            .field("name", &self.name)
            .field("labels", &self.labels)
            .field("library", &self.library.len())
            .field("lattice", &self.lattice.is_some())
            .finish_non_exhaustive()
    }
}

/// The state every handler shares.
pub(crate) struct AdminState {
    runtime: Arc<Runtime>,
    config: AdminConfig,
    /// Changes made through this endpoint, for `/v1/events`.
    changes: broadcast::Sender<AdminEvent>,
    /// Flips to `true` when the endpoint shuts down: event streams end.
    closing: watch::Receiver<bool>,
}

/// A running admin endpoint.
#[derive(Debug)]
pub struct AdminHandle {
    local_addr: SocketAddr,
    closing: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl AdminHandle {
    /// The address the listener is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting connections, ends the event streams, lets requests in flight finish,
    /// and returns when they have or when `grace` has passed (then the rest are closed).
    pub async fn shutdown(mut self, grace: Duration) {
        let _ = self.closing.send(true);
        if let Some(mut task) = self.task.take()
            && tokio::time::timeout(grace, &mut task).await.is_err()
        {
            task.abort();
        }
    }
}

impl Drop for AdminHandle {
    fn drop(&mut self) {
        let _ = self.closing.send(true);
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Serves the admin endpoint of `runtime` on `address`.
pub async fn serve_admin(
    runtime: Arc<Runtime>,
    config: AdminConfig,
    address: &str,
) -> std::io::Result<AdminHandle> {
    let listener = tokio::net::TcpListener::bind(address).await?;
    let local_addr = listener.local_addr()?;
    let (closing, closed) = watch::channel(false);
    let state = Arc::new(AdminState {
        runtime,
        config,
        changes: broadcast::channel(256).0,
        closing: closed.clone(),
    });
    let app = router(state).into_make_service();
    let mut stop = closed;
    let task = tokio::spawn(async move {
        let serving = axum::serve(listener, app).with_graceful_shutdown(async move {
            let _ = stop.wait_for(|c| *c).await;
        });
        if let Err(e) = serving.await {
            tracing::error!(address = %local_addr, error = %e, "the admin endpoint failed");
        }
    });
    Ok(AdminHandle {
        local_addr,
        closing,
        task: Some(task),
    })
}

/// The admin endpoint's routes and layers.
pub(crate) fn router(state: Arc<AdminState>) -> Router {
    use tower_http::compression::CompressionLayer;
    use tower_http::timeout::TimeoutLayer;
    use tower_http::trace::TraceLayer;

    // Event streams last; everything else answers within the timeout.
    let streams = Router::new()
        .route("/v1/events", axum::routing::get(events::all))
        .route("/v1/runs/{id}/events", axum::routing::get(events::run));
    let answers = api::routes()
        .merge(dashboard::routes())
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            Duration::from_secs(30),
        ))
        .layer(CompressionLayer::new());
    answers
        .merge(streams)
        .fallback(api::not_found)
        .layer(middleware::from_fn_with_state(state.clone(), authorize))
        .layer(tower_http::limit::RequestBodyLimitLayer::new(256 << 10))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

/// The one check of the token: every method but reads needs it.
async fn authorize(State(state): State<Arc<AdminState>>, request: Request, next: Next) -> Response {
    let reads = matches!(*request.method(), Method::GET | Method::HEAD);
    if reads || token_matches(&state.config.token, request.headers()) {
        return next.run(request).await;
    }
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        "this change needs `Authorization: Bearer <admin token>`\n",
    )
        .into_response()
}

/// Whether the request carries the token (compared in constant time: how long it takes
/// says nothing about the token).
fn token_matches(token: &str, headers: &axum::http::HeaderMap) -> bool {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer "))
        .is_some_and(|given| bool::from(given.trim().as_bytes().ct_eq(token.as_bytes())))
        && !token.is_empty()
}

/// A fresh random admin token (for a host configured without one).
pub fn generate_token() -> String {
    let bytes: [u8; 24] = rand::random();
    data_encoding::BASE64URL_NOPAD.encode(&bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_is_compared_whole() {
        let mut headers = axum::http::HeaderMap::new();
        assert!(!token_matches("secret", &headers));
        headers.insert(header::AUTHORIZATION, "Bearer secret".parse().unwrap());
        assert!(token_matches("secret", &headers));
        assert!(!token_matches("secret2", &headers));
        assert!(!token_matches("", &headers));
        headers.insert(header::AUTHORIZATION, "Bearer secre".parse().unwrap());
        assert!(!token_matches("secret", &headers));
        headers.insert(header::AUTHORIZATION, "Basic secret".parse().unwrap());
        assert!(!token_matches("secret", &headers));
        assert_ne!(generate_token(), generate_token());
        assert_eq!(generate_token().len(), 32);
    }
}
