//! The admin API's handlers and the OpenAPI document generated from them.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{IntoParams, OpenApi, ToSchema};

use super::events::AdminEvent;
use super::graph::{GraphEdge, GraphNode, RunGraph};
use super::{AdminState, graph};
use crate::policy::Denial;
use crate::up::config::contract_id;
use crate::up::control::{ActorInfo, HostEvent, HostInfo, LinkInfo, ProviderInfo};
use crate::up::runtime::{RuntimeError, RuntimeLinkError};
use crate::workflow::routes::resolve_remote_routes;
use crate::workflow::scheduler::{Scheduler, WorkflowError};
use crate::workflow::spec::{OnFailure, Workflow};
use crate::workflow::state::{RunState, RunStatus, StepState, StepStatus};

/// The OpenAPI document of the admin endpoint.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Sigil admin API",
        description = "Health, inventory, links, workflow runs and policy denials of a Sigil host and its lattice. Reads are open; every change needs the admin token as a bearer token."
    ),
    paths(
        healthz, readyz, metrics, status, hosts, actors, scale_actor, stop_actor, links,
        put_link, post_link, delete_link, runs, submit_run, run, cancel_run, delete_run, run_graph, run_step,
        workflows, start_workflow, denials, openapi, check_token, super::events::all, super::events::run,
    ),
    components(schemas(
        StatusBody, ActorBody, ProviderBody, LinkBody, LinkRequest, RunSummary, RunRequest,
        Started, ScaleRequest, StepDetail, WorkflowInfo, InputInfo, StartRequest, HostInfo,
        ActorInfo, ProviderInfo, LinkInfo, HostEvent, RunState, StepState, RunStatus,
        StepStatus, OnFailure, RunGraph, GraphNode, GraphEdge, Denial, AdminEvent,
    )),
    modifiers(&Bearer),
    tags(
        (name = "health", description = "Liveness, readiness and metrics"),
        (name = "inventory", description = "Hosts, actors, providers and links"),
        (name = "runs", description = "Workflow runs"),
        (name = "policy", description = "Policy decisions"),
        (name = "events", description = "Live changes"),
    )
)]
pub struct ApiDoc;

/// Declares the bearer token that changes need.
struct Bearer;

impl utoipa::Modify for Bearer {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "admin_token",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("The host's admin token"))
                    .build(),
            ),
        );
    }
}

/// The routes answered at once (event streams are elsewhere).
#[allow(deprecated)] // DELETE /v1/runs/{id} stays for the clients that use it.
pub(super) fn routes() -> Router<Arc<AdminState>> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/v1/status", get(status))
        .route("/v1/hosts", get(hosts))
        .route("/v1/actors", get(actors))
        .route("/v1/actors/{actor}", delete(stop_actor))
        .route("/v1/actors/{actor}/scale", post(scale_actor))
        .route("/v1/links", get(links).put(put_link).post(post_link))
        .route(
            "/v1/links/{actor}/{contract_id}/{link_name}",
            delete(delete_link),
        )
        .route("/v1/runs", get(runs).post(submit_run))
        .route("/v1/runs/{id}", get(run).delete(delete_run))
        .route("/v1/runs/{id}/cancel", post(cancel_run))
        .route("/v1/runs/{id}/graph", get(run_graph))
        .route("/v1/runs/{id}/steps/{step}", get(run_step))
        .route("/v1/workflows", get(workflows))
        .route("/v1/workflows/{name}/runs", post(start_workflow))
        .route("/v1/denials", get(denials))
        .route("/v1/openapi.json", get(openapi))
        .route("/v1/auth", get(check_token))
}

/// An error answer: a status and a sentence saying what to do, as plain text.
#[derive(Debug)]
pub(super) struct ApiError(StatusCode, String);

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError(status, message.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.0, format!("{}\n", self.1)).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        response
    }
}

impl From<WorkflowError> for ApiError {
    fn from(e: WorkflowError) -> Self {
        let status = match &e {
            WorkflowError::NoSuchRun(_) => StatusCode::NOT_FOUND,
            WorkflowError::Spec(_) => StatusCode::BAD_REQUEST,
            WorkflowError::NoHost { .. } => StatusCode::CONFLICT,
            _ => StatusCode::SERVICE_UNAVAILABLE,
        };
        ApiError(status, e.to_string())
    }
}

/// Any unknown path.
pub(super) async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not found; see / (the dashboard), /v1/openapi.json (every route), /healthz, /readyz, \
         /metrics",
    )
}

/// The scheduler, or 404 on a host without workflows.
pub(super) fn workflows_of(state: &AdminState) -> Result<&Arc<Scheduler>, ApiError> {
    state
        .config
        .workflows
        .as_ref()
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "this host runs no workflows"))
}

/// A JSON body, or 400 naming what is wrong and what to send.
fn body<T: serde::de::DeserializeOwned>(bytes: &[u8], expected: &str) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("the body is not {expected} ({e})"),
        )
    })
}

fn change(state: &AdminState, event: AdminEvent) {
    let _ = state.changes.send(event);
}

/// This host's status.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct StatusBody {
    /// Its name.
    host: String,
    /// Its labels.
    labels: BTreeMap<String, String>,
    /// Whether it serves: not draining, every provider healthy.
    ready: bool,
    /// Whether it is shutting down.
    draining: bool,
    /// Seconds since it started.
    uptime_seconds: u64,
    /// Invocations running now.
    in_flight: usize,
    /// Its actors.
    actors: Vec<ActorBody>,
    /// Its provider instances.
    providers: Vec<ProviderBody>,
    /// How many links it applies.
    links: usize,
}

/// An actor, in the status.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct ActorBody {
    /// Its name.
    name: String,
    /// Its public key.
    key: String,
    /// Where its module came from.
    #[serde(skip_serializing_if = "Option::is_none")]
    module: Option<String>,
}

/// A provider instance, in the status.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct ProviderBody {
    /// Its instance name.
    name: String,
    /// Its kind.
    kind: String,
    /// Its contract.
    contract_id: String,
    /// Whether its backend answers.
    healthy: bool,
    /// Why not, when it does not.
    #[serde(skip_serializing_if = "Option::is_none")]
    problem: Option<String>,
    /// How many links it serves.
    links: usize,
}

/// A link.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct LinkBody {
    /// The actor's name.
    actor: String,
    /// The actor's public key.
    actor_key: String,
    /// The contract.
    contract_id: String,
    /// The link name.
    link_name: String,
    /// The provider instance.
    provider: String,
    /// The link's settings.
    config: BTreeMap<String, String>,
}

async fn status_body(state: &AdminState) -> StatusBody {
    let s = state.runtime.status().await;
    StatusBody {
        host: state.config.name.clone(),
        labels: state.config.labels.clone(),
        ready: s.ready,
        draining: s.draining,
        uptime_seconds: s.uptime.as_secs(),
        in_flight: s.in_flight,
        actors: s
            .actors
            .into_iter()
            .map(|(name, key)| ActorBody {
                module: state.runtime.actor_origin(&key),
                name,
                key,
            })
            .collect(),
        providers: s
            .providers
            .into_iter()
            .map(|p| ProviderBody {
                problem: match &p.health {
                    sigil_providers::Health::Healthy => None,
                    sigil_providers::Health::Unhealthy(why) => Some(why.clone()),
                },
                healthy: p.health.is_healthy(),
                name: p.name,
                kind: p.kind.to_string(),
                contract_id: p.contract_id.to_string(),
                links: p.links,
            })
            .collect(),
        links: s.links,
    }
}

/// Liveness: `ok` while the process serves.
#[utoipa::path(get, path = "/healthz", tag = "health",
    responses((status = 200, description = "The process serves", content_type = "text/plain", body = String)))]
async fn healthz() -> &'static str {
    "ok\n"
}

/// Readiness: 200 when every provider is healthy and the host is not draining.
#[utoipa::path(get, path = "/readyz", tag = "health",
    responses(
        (status = 200, description = "Ready", body = StatusBody),
        (status = 503, description = "Draining, or a provider's backend does not answer", body = StatusBody),
    ))]
async fn readyz(State(state): State<Arc<AdminState>>) -> Response {
    let body = status_body(&state).await;
    let code = if body.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body)).into_response()
}

/// Prometheus metrics.
#[utoipa::path(get, path = "/metrics", tag = "health",
    responses((status = 200, description = "Prometheus text format 0.0.4", content_type = "text/plain", body = String)))]
async fn metrics(State(state): State<Arc<AdminState>>) -> Response {
    // Refresh the provider health gauges before encoding.
    let _ = state.runtime.status().await;
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.runtime.metrics().encode(),
    )
        .into_response()
}

/// This host: name, labels, uptime, actors, providers, links.
#[utoipa::path(get, path = "/v1/status", tag = "inventory",
    responses((status = 200, description = "This host's status", body = StatusBody)))]
async fn status(State(state): State<Arc<AdminState>>) -> Json<StatusBody> {
    Json(status_body(&state).await)
}

/// This host's own inventory.
async fn local_host(state: &AdminState) -> HostInfo {
    crate::up::control::inventory(
        &state.runtime,
        state.config.host_id.as_deref().unwrap_or("local"),
        &state.config.name,
        &state.config.labels,
    )
    .await
}

/// How long the lattice's hosts have to answer an inventory request.
const INVENTORY_WAIT: std::time::Duration = std::time::Duration::from_millis(500);

/// Every host of the lattice that answers (this one alone when it is on none), with their
/// actors' verified claims, providers and links.
#[utoipa::path(get, path = "/v1/hosts", tag = "inventory",
    responses((status = 200, description = "The hosts, this one first", body = Vec<HostInfo>)))]
async fn hosts(State(state): State<Arc<AdminState>>) -> Json<Vec<HostInfo>> {
    let me = local_host(&state).await;
    let mut all = vec![];
    if let Some(lattice) = &state.config.lattice {
        match lattice.hosts(INVENTORY_WAIT).await {
            Ok(found) => all.extend(found.into_iter().filter(|h| h.id != me.id)),
            Err(e) => tracing::warn!(error = %e, "the lattice's inventory did not answer"),
        }
    }
    all.insert(0, me);
    Json(all)
}

/// This host's actors with their verified claims.
#[utoipa::path(get, path = "/v1/actors", tag = "inventory",
    responses((status = 200, description = "The actors", body = Vec<ActorInfo>)))]
async fn actors(State(state): State<Arc<AdminState>>) -> Json<Vec<ActorInfo>> {
    Json(
        state
            .runtime
            .host()
            .actors()
            .iter()
            .map(|a| crate::up::control::actor_info(&state.runtime, a))
            .collect(),
    )
}

/// How many invocations of an actor may run at once.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ScaleRequest {
    /// At least 1.
    #[schema(minimum = 1)]
    max_concurrent: usize,
}

fn actor_error(e: &RuntimeError) -> ApiError {
    match e {
        RuntimeError::NoSuchActor(_) => ApiError::new(StatusCode::NOT_FOUND, e.to_string()),
        _ => ApiError::new(StatusCode::CONFLICT, e.to_string()),
    }
}

/// Limits an actor's invocations at once.
#[utoipa::path(post, path = "/v1/actors/{actor}/scale", tag = "inventory",
    params(("actor" = String, Path, description = "The actor's public key or name")),
    request_body = ScaleRequest,
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "Scaled", body = ActorInfo),
        (status = 400, description = "Not a scale request", content_type = "text/plain", body = String),
        (status = 401, description = "No admin token", content_type = "text/plain", body = String),
        (status = 404, description = "No such actor", content_type = "text/plain", body = String),
    ))]
async fn scale_actor(
    State(state): State<Arc<AdminState>>,
    Path(actor): Path<String>,
    bytes: Bytes,
) -> Result<Json<ActorInfo>, ApiError> {
    let request: ScaleRequest = body(&bytes, "a scale request: {\"max_concurrent\": N}")?;
    if request.max_concurrent == 0 {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "max_concurrent must be at least 1; stop the actor to run none",
        ));
    }
    state
        .runtime
        .scale_actor(&actor, request.max_concurrent)
        .map_err(|e| actor_error(&e))?;
    let found = state
        .runtime
        .find_actor(&actor)
        .ok_or_else(|| actor_error(&RuntimeError::NoSuchActor(actor.clone())))?;
    let info = crate::up::control::actor_info(&state.runtime, &found);
    change(
        &state,
        AdminEvent::Host {
            kind: "actor_scaled".into(),
            detail: serde_json::json!({ "actor": info.subject, "name": info.name, "max_concurrent": request.max_concurrent }),
        },
    );
    Ok(Json(info))
}

/// Stops an actor: it takes no new invocations, and its links are removed.
#[utoipa::path(delete, path = "/v1/actors/{actor}", tag = "inventory",
    params(("actor" = String, Path, description = "The actor's public key or name")),
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "Stopped", content_type = "text/plain", body = String),
        (status = 401, description = "No admin token", content_type = "text/plain", body = String),
        (status = 404, description = "No such actor", content_type = "text/plain", body = String),
    ))]
async fn stop_actor(
    State(state): State<Arc<AdminState>>,
    Path(actor): Path<String>,
) -> Result<String, ApiError> {
    let stopped = state
        .runtime
        .stop_actor(&actor)
        .await
        .map_err(|e| actor_error(&e))?;
    change(
        &state,
        AdminEvent::Host {
            kind: "actor_stopped".into(),
            detail: serde_json::json!({ "actor": stopped.subject(), "name": stopped.name() }),
        },
    );
    Ok(format!("actor {} stopped\n", stopped.name()))
}

/// The links.
#[utoipa::path(get, path = "/v1/links", tag = "inventory",
    responses((status = 200, description = "The links", body = Vec<LinkBody>)))]
async fn links(State(state): State<Arc<AdminState>>) -> Json<Vec<LinkBody>> {
    Json(
        state
            .runtime
            .registry()
            .links()
            .into_iter()
            .map(|l| LinkBody {
                actor: l.actor.name.clone(),
                actor_key: l.actor.subject.clone(),
                contract_id: l.contract_id,
                link_name: l.link_name,
                provider: l.provider,
                config: l.config.0,
            })
            .collect(),
    )
}

/// A link to add.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct LinkRequest {
    /// The actor, by public key or name.
    actor: String,
    /// The contract (`wasmcloud:keyvalue`, or a short name like `keyvalue`).
    contract_id: String,
    /// The link name.
    #[serde(default = "default_link_name")]
    #[schema(default = "default")]
    link_name: String,
    /// The provider instance.
    provider: String,
    /// The link's settings.
    #[serde(default)]
    config: BTreeMap<String, String>,
}

fn default_link_name() -> String {
    sigil_providers::DEFAULT_LINK_NAME.to_string()
}

/// Adds a link.
#[utoipa::path(put, path = "/v1/links", tag = "inventory",
    request_body = LinkRequest,
    security(("admin_token" = [])),
    responses(
        (status = 201, description = "Added", content_type = "text/plain", body = String),
        (status = 400, description = "Not a link, or refused by its provider", content_type = "text/plain", body = String),
        (status = 401, description = "No admin token", content_type = "text/plain", body = String),
        (status = 403, description = "Denied by the host's policy", content_type = "text/plain", body = String),
        (status = 404, description = "No such actor", content_type = "text/plain", body = String),
        (status = 409, description = "The actor has that link already", content_type = "text/plain", body = String),
    ))]
async fn put_link(
    State(state): State<Arc<AdminState>>,
    bytes: Bytes,
) -> Result<(StatusCode, String), ApiError> {
    let request: LinkRequest = body(
        &bytes,
        "a link definition; send JSON with actor, contract_id, provider and optionally \
         link_name and config",
    )?;
    let definition = sigil_providers::LinkDefinition {
        actor: request.actor,
        contract_id: contract_id(&request.contract_id),
        link_name: request.link_name,
        provider: request.provider,
        config: sigil_providers::LinkConfig(request.config),
    };
    match state.runtime.add_link(&definition).await {
        Ok(()) => {
            change(
                &state,
                AdminEvent::Host {
                    kind: "link_added".into(),
                    detail: serde_json::json!({
                        "actor": definition.actor,
                        "contract_id": definition.contract_id,
                        "link_name": definition.link_name,
                        "provider": definition.provider,
                    }),
                },
            );
            Ok((StatusCode::CREATED, "link added\n".into()))
        }
        Err(e) => {
            let status = match &e {
                RuntimeLinkError::NoSuchActor(_) => StatusCode::NOT_FOUND,
                RuntimeLinkError::Denied(_) => StatusCode::FORBIDDEN,
                RuntimeLinkError::Link(sigil_providers::LinkError::Duplicate { .. }) => {
                    StatusCode::CONFLICT
                }
                _ => StatusCode::BAD_REQUEST,
            };
            Err(ApiError::new(status, e.to_string()))
        }
    }
}

/// Adds a link (as `PUT`).
#[utoipa::path(post, path = "/v1/links", tag = "inventory",
    request_body = LinkRequest,
    security(("admin_token" = [])),
    responses(
        (status = 201, description = "Added", content_type = "text/plain", body = String),
        (status = 400, description = "Not a link, or refused by its provider", content_type = "text/plain", body = String),
        (status = 401, description = "No admin token", content_type = "text/plain", body = String),
        (status = 403, description = "Denied by the host's policy", content_type = "text/plain", body = String),
        (status = 404, description = "No such actor", content_type = "text/plain", body = String),
        (status = 409, description = "The actor has that link already", content_type = "text/plain", body = String),
    ))]
async fn post_link(
    state: State<Arc<AdminState>>,
    bytes: Bytes,
) -> Result<(StatusCode, String), ApiError> {
    put_link(state, bytes).await
}

/// Removes a link.
#[utoipa::path(delete, path = "/v1/links/{actor}/{contract_id}/{link_name}", tag = "inventory",
    params(
        ("actor" = String, Path, description = "The actor's public key or name"),
        ("contract_id" = String, Path, description = "The contract"),
        ("link_name" = String, Path, description = "The link name"),
    ),
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "Removed", content_type = "text/plain", body = String),
        (status = 401, description = "No admin token", content_type = "text/plain", body = String),
        (status = 404, description = "No such link", content_type = "text/plain", body = String),
    ))]
async fn delete_link(
    State(state): State<Arc<AdminState>>,
    Path((actor, contract, name)): Path<(String, String, String)>,
) -> Result<String, ApiError> {
    let contract = contract_id(&contract);
    state
        .runtime
        .remove_link(&actor, &contract, &name)
        .await
        .map_err(|e| ApiError::new(StatusCode::NOT_FOUND, e.to_string()))?;
    change(
        &state,
        AdminEvent::Host {
            kind: "link_removed".into(),
            detail: serde_json::json!({ "actor": actor, "contract_id": contract, "link_name": name }),
        },
    );
    Ok("link removed\n".into())
}

/// Which runs to list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct RunFilter {
    /// Only runs in this status.
    status: Option<RunStatus>,
    /// Only runs of this workflow.
    workflow: Option<String>,
    /// At most this many (1 to 1000).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
    /// After skipping this many.
    #[param(minimum = 0, maximum = 4294967295_u64)]
    offset: Option<u32>,
}

/// A run, in a list.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct RunSummary {
    /// Its ID.
    id: String,
    /// Its workflow's name.
    workflow: String,
    /// Where it is.
    status: RunStatus,
    /// When it was created (Unix milliseconds).
    created_ms: u64,
    /// When it ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    finished_ms: Option<u64>,
    /// How many steps it has.
    steps: usize,
    /// How many are over.
    steps_done: usize,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// Workflow runs, newest first; the total before paging is in `X-Total-Count`.
#[utoipa::path(get, path = "/v1/runs", tag = "runs",
    params(RunFilter),
    responses(
        (status = 200, description = "The runs", body = Vec<RunSummary>,
            headers(("x-total-count" = usize, description = "Runs matching the filters, before paging"))),
        (status = 400, description = "A bad filter", content_type = "text/plain", body = String),
        (status = 404, description = "This host runs no workflows", content_type = "text/plain", body = String),
        (status = 503, description = "The run store does not answer", content_type = "text/plain", body = String),
    ))]
async fn runs(
    State(state): State<Arc<AdminState>>,
    filter: Result<Query<RunFilter>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(filter) = filter.map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!(
                "{}; filter with status (running, succeeded, failed, cancelled), workflow, \
                 limit and offset",
                e.body_text()
            ),
        )
    })?;
    let limit = filter.limit.unwrap_or(100) as usize;
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("limit = {limit} is out of range; use 1 to 1000"),
        ));
    }
    let scheduler = workflows_of(&state)?;
    let mut all = scheduler.list().await?;
    all.retain(|r| {
        filter.status.is_none_or(|s| r.status == s)
            && filter.workflow.as_deref().is_none_or(|w| r.workflow == w)
    });
    all.sort_by(|a, b| b.created_ms.cmp(&a.created_ms).then(a.id.cmp(&b.id)));
    let total = all.len();
    let page: Vec<RunSummary> = all
        .into_iter()
        .skip(filter.offset.unwrap_or(0) as usize)
        .take(limit)
        .map(|r| RunSummary {
            steps: r.steps.len(),
            steps_done: r.steps.values().filter(|s| s.status.is_final()).count(),
            id: r.id,
            workflow: r.workflow,
            status: r.status,
            created_ms: r.created_ms,
            finished_ms: r.finished_ms,
            error: r.error,
        })
        .collect();
    let mut response = Json(page).into_response();
    response
        .headers_mut()
        .insert("x-total-count", HeaderValue::from(total));
    Ok(response)
}

/// A run to start: a spec and its inputs.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RunRequest {
    /// The workflow: a spec object, or its YAML text.
    #[schema(schema_with = spec_schema)]
    workflow: Value,
    /// The inputs, by name.
    #[serde(default)]
    inputs: BTreeMap<String, Value>,
}

/// A spec: an object, or YAML text.
fn spec_schema() -> utoipa::openapi::schema::Schema {
    use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Type};
    OneOfBuilder::new()
        .item(
            ObjectBuilder::new()
                .schema_type(Type::Object)
                .description(Some("The spec (see docs/workflows.md)")),
        )
        .item(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .description(Some("The spec as YAML text")),
        )
        .build()
        .into()
}

/// A started run.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct Started {
    /// Its ID.
    run: String,
}

async fn started(state: &AdminState, id: String) -> (StatusCode, Json<Started>) {
    change(
        state,
        AdminEvent::Run {
            run: id.clone(),
            status: RunStatus::Running,
        },
    );
    (StatusCode::CREATED, Json(Started { run: id }))
}

/// Starts a run of a workflow given whole.
#[utoipa::path(post, path = "/v1/runs", tag = "runs",
    request_body = RunRequest,
    security(("admin_token" = [])),
    responses(
        (status = 201, description = "Started", body = Started),
        (status = 400, description = "Not a run request, or the spec or inputs are wrong", content_type = "text/plain", body = String),
        (status = 401, description = "No admin token", content_type = "text/plain", body = String),
        (status = 404, description = "This host runs no workflows", content_type = "text/plain", body = String),
        (status = 409, description = "A step names an actor no host runs", content_type = "text/plain", body = String),
        (status = 503, description = "The run store does not answer", content_type = "text/plain", body = String),
    ))]
async fn submit_run(
    State(state): State<Arc<AdminState>>,
    bytes: Bytes,
) -> Result<(StatusCode, Json<Started>), ApiError> {
    let scheduler = workflows_of(&state)?;
    let request: RunRequest = body(
        &bytes,
        "a run request; send JSON with `workflow` (a spec object or its YAML text) and `inputs`",
    )?;
    let workflow = Workflow::from_value(&request.workflow).map_err(WorkflowError::from)?;
    let routes = resolve_remote_routes(&workflow, Some(&state.runtime))
        .await
        .map_err(WorkflowError::from)?;
    let id = scheduler.submit(&workflow, request.inputs, &routes).await?;
    Ok(started(&state, id).await)
}

/// A run's state: its steps, attempts, hosts, timings, errors and outputs.
#[utoipa::path(get, path = "/v1/runs/{id}", tag = "runs",
    params(("id" = String, Path, description = "The run's ID")),
    responses(
        (status = 200, description = "The run", body = RunState),
        (status = 404, description = "No such run", content_type = "text/plain", body = String),
        (status = 503, description = "The run store does not answer", content_type = "text/plain", body = String),
    ))]
async fn run(
    State(state): State<Arc<AdminState>>,
    Path(id): Path<String>,
) -> Result<Json<RunState>, ApiError> {
    Ok(Json(workflows_of(&state)?.status(&id).await?))
}

/// Cancels a run: steps not started will not be. The run's record stays.
#[utoipa::path(post, path = "/v1/runs/{id}/cancel", tag = "runs",
    params(("id" = String, Path, description = "The run's ID")),
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "The run, cancelled (or as it ended, when it had)", body = RunState),
        (status = 401, description = "No admin token", content_type = "text/plain", body = String),
        (status = 404, description = "No such run", content_type = "text/plain", body = String),
        (status = 503, description = "The run store does not answer", content_type = "text/plain", body = String),
    ))]
async fn cancel_run(
    State(state): State<Arc<AdminState>>,
    Path(id): Path<String>,
) -> Result<Json<RunState>, ApiError> {
    let run = workflows_of(&state)?.cancel(&id).await?;
    change(
        &state,
        AdminEvent::Run {
            run: run.id.clone(),
            status: run.status,
        },
    );
    Ok(Json(run))
}

/// Cancels a run, as `POST /v1/runs/{id}/cancel` does (the run is not deleted: its record
/// stays).
#[utoipa::path(delete, path = "/v1/runs/{id}", tag = "runs",
    params(("id" = String, Path, description = "The run's ID")),
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "The run, cancelled (or as it ended, when it had)", body = RunState),
        (status = 401, description = "No admin token", content_type = "text/plain", body = String),
        (status = 404, description = "No such run", content_type = "text/plain", body = String),
        (status = 503, description = "The run store does not answer", content_type = "text/plain", body = String),
    ))]
#[deprecated = "use POST /v1/runs/{id}/cancel: DELETE keeps the run, which DELETE should not"]
async fn delete_run(
    state: State<Arc<AdminState>>,
    id: Path<String>,
) -> Result<Json<RunState>, ApiError> {
    cancel_run(state, id).await
}

/// A run's steps placed as a graph (a layered layout computed on the server).
#[utoipa::path(get, path = "/v1/runs/{id}/graph", tag = "runs",
    params(("id" = String, Path, description = "The run's ID")),
    responses(
        (status = 200, description = "The graph", body = RunGraph),
        (status = 404, description = "No such run", content_type = "text/plain", body = String),
        (status = 503, description = "The run store does not answer", content_type = "text/plain", body = String),
    ))]
async fn run_graph(
    State(state): State<Arc<AdminState>>,
    Path(id): Path<String>,
) -> Result<Json<RunGraph>, ApiError> {
    let run = workflows_of(&state)?.status(&id).await?;
    let mut graph = graph::layout(&run);
    for node in &mut graph.nodes {
        if let Some(actor) = state.runtime.find_actor(&node.actor) {
            node.actor = actor.name().to_string();
        }
    }
    Ok(Json(graph))
}

/// One step of a run.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct StepDetail {
    /// The run.
    run: String,
    /// The step's name.
    step: String,
    /// The actor the spec names.
    actor: String,
    /// The operation.
    operation: String,
    /// Its state: status, attempts, host, timings, output, error.
    state: StepState,
    /// Its input, as built from the run (absent until the steps it uses have ended).
    #[serde(skip_serializing_if = "Option::is_none")]
    input: Option<Value>,
    /// Why the input cannot be shown yet.
    #[serde(skip_serializing_if = "Option::is_none")]
    input_note: Option<String>,
}

/// One step of a run: its state and the input it was (or will be) given.
#[utoipa::path(get, path = "/v1/runs/{id}/steps/{step}", tag = "runs",
    params(
        ("id" = String, Path, description = "The run's ID"),
        ("step" = String, Path, description = "The step's name"),
    ),
    responses(
        (status = 200, description = "The step", body = StepDetail),
        (status = 404, description = "No such run or step", content_type = "text/plain", body = String),
        (status = 503, description = "The run store does not answer", content_type = "text/plain", body = String),
    ))]
async fn run_step(
    State(state): State<Arc<AdminState>>,
    Path((id, step)): Path<(String, String)>,
) -> Result<Json<StepDetail>, ApiError> {
    let scheduler = workflows_of(&state)?;
    let run = scheduler.status(&id).await?;
    let Some(step_state) = run.steps.get(&step).cloned() else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("run {id} has no step {step:?}"),
        ));
    };
    let workflow = scheduler.workflow(&run).await?;
    let spec = workflow.steps.get(&step);
    let (input, input_note) = match spec.map(|s| s.input.render(&run)) {
        Some(Ok(v)) => (Some(v), None),
        Some(Err(e)) => (None, Some(e)),
        None => (None, Some("the spec has no such step".into())),
    };
    Ok(Json(StepDetail {
        actor: spec.map(|s| s.spec.actor.clone()).unwrap_or_default(),
        operation: spec.map(|s| s.spec.operation.clone()).unwrap_or_default(),
        run: id,
        step,
        state: step_state,
        input,
        input_note,
    }))
}

/// A workflow this host offers to start.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct WorkflowInfo {
    /// Its name.
    name: String,
    /// What it does.
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<String>,
    /// Its spec file.
    file: String,
    /// Its inputs.
    inputs: BTreeMap<String, InputInfo>,
    /// Its steps, in order.
    steps: Vec<String>,
}

/// An input of a workflow.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct InputInfo {
    /// What it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<String>,
    /// Its default.
    #[serde(skip_serializing_if = "Option::is_none")]
    default: Option<Value>,
    /// Whether a run must give it.
    required: bool,
}

/// The workflows this host offers to start by name (`[workflows] specs`).
#[utoipa::path(get, path = "/v1/workflows", tag = "runs",
    responses((status = 200, description = "The workflows", body = Vec<WorkflowInfo>)))]
async fn workflows(State(state): State<Arc<AdminState>>) -> Json<Vec<WorkflowInfo>> {
    Json(
        state
            .config
            .library
            .iter()
            .map(|w| WorkflowInfo {
                name: w.workflow.spec.name.clone(),
                description: w.workflow.spec.description.clone(),
                file: w.file.display().to_string(),
                inputs: w
                    .workflow
                    .spec
                    .inputs
                    .iter()
                    .map(|(name, i)| {
                        (
                            name.clone(),
                            InputInfo {
                                description: i.description.clone(),
                                default: i.default.clone(),
                                required: i.default.is_none(),
                            },
                        )
                    })
                    .collect(),
                steps: w.workflow.order.clone(),
            })
            .collect(),
    )
}

/// The inputs of a run of a stored workflow.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct StartRequest {
    /// The inputs, by name.
    #[serde(default)]
    inputs: BTreeMap<String, Value>,
}

/// Starts a run of a workflow this host offers.
#[utoipa::path(post, path = "/v1/workflows/{name}/runs", tag = "runs",
    params(("name" = String, Path, description = "The workflow's name")),
    request_body = StartRequest,
    security(("admin_token" = [])),
    responses(
        (status = 201, description = "Started", body = Started),
        (status = 400, description = "Not a start request, or the inputs are wrong", content_type = "text/plain", body = String),
        (status = 401, description = "No admin token", content_type = "text/plain", body = String),
        (status = 404, description = "No such workflow", content_type = "text/plain", body = String),
        (status = 409, description = "A step names an actor no host runs", content_type = "text/plain", body = String),
        (status = 503, description = "The run store does not answer", content_type = "text/plain", body = String),
    ))]
async fn start_workflow(
    State(state): State<Arc<AdminState>>,
    Path(name): Path<String>,
    bytes: Bytes,
) -> Result<(StatusCode, Json<Started>), ApiError> {
    let scheduler = workflows_of(&state)?;
    let Some(stored) = state
        .config
        .library
        .iter()
        .find(|w| w.workflow.spec.name == name)
    else {
        let offered: Vec<&str> = state
            .config
            .library
            .iter()
            .map(|w| w.workflow.spec.name.as_str())
            .collect();
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!(
                "no workflow {name:?} is offered here (offered: {}); list spec files in \
                 [workflows] specs",
                if offered.is_empty() {
                    "none".to_string()
                } else {
                    offered.join(", ")
                }
            ),
        ));
    };
    let request: StartRequest = if bytes.is_empty() {
        StartRequest::default()
    } else {
        body(
            &bytes,
            "a start request; send JSON like {\"inputs\": {\"name\": value}}",
        )?
    };
    let id = scheduler
        .submit(&stored.workflow, request.inputs, &stored.routes)
        .await?;
    Ok(started(&state, id).await)
}

/// Recent policy denials on this host, oldest first (at most 200).
#[utoipa::path(get, path = "/v1/denials", tag = "policy",
    responses((status = 200, description = "The denials", body = Vec<Denial>)))]
async fn denials(State(state): State<Arc<AdminState>>) -> Json<Vec<Denial>> {
    Json(
        state
            .runtime
            .host()
            .enforcer()
            .map(|e| e.denials().recent())
            .unwrap_or_default(),
    )
}

/// Whether the request's bearer token is the admin token (for a client to check the token
/// it was given before it offers changes).
#[utoipa::path(get, path = "/v1/auth", tag = "health",
    security(("admin_token" = [])),
    responses(
        (status = 204, description = "The token is right"),
        (status = 401, description = "No token, or a wrong one", content_type = "text/plain", body = String),
    ))]
async fn check_token(
    State(state): State<Arc<AdminState>>,
    headers: axum::http::HeaderMap,
) -> Result<StatusCode, ApiError> {
    if super::token_matches(&state.config.token, &headers) {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "no admin token, or a wrong one",
        ))
    }
}

/// This document.
#[utoipa::path(get, path = "/v1/openapi.json", tag = "health",
    responses((status = 200, description = "The OpenAPI 3 document of this API", content_type = "application/json", body = Object)))]
async fn openapi() -> Response {
    static DOC: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let doc = DOC.get_or_init(|| ApiDoc::openapi().to_pretty_json().unwrap_or_default());
    ([(header::CONTENT_TYPE, "application/json")], doc.clone()).into_response()
}
