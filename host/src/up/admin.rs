//! The admin endpoint: health, readiness, Prometheus metrics, status and the link API.
//!
//! | method | path | answer |
//! |---|---|---|
//! | GET | `/healthz` | `200 ok` while the process serves (liveness) |
//! | GET | `/readyz` | `200` when every provider is healthy and the host is not draining, else `503`; JSON either way |
//! | GET | `/metrics` | Prometheus text format |
//! | GET | `/v1/status` | JSON: host name, labels, uptime, actors, providers, links |
//! | GET | `/v1/links` | JSON array of links |
//! | PUT | `/v1/links` | add a link (JSON body: `actor`, `contract_id`, `link_name`, `provider`, `config`) |
//! | DELETE | `/v1/links/{actor}/{contract_id}/{link_name}` | remove a link |
//! | GET | `/v1/runs` | JSON array of workflow runs: ID, workflow, status |
//! | POST | `/v1/runs` | start a run (JSON body: `workflow`, a spec object or its YAML text, and `inputs`); `201` with `{"run": ID}`; `409` when a step names an actor no host runs |
//! | GET | `/v1/runs/{id}` | a run's state |
//! | DELETE | `/v1/runs/{id}` | cancel a run |
//!
//! Changes need `Authorization: Bearer <admin_token>` when the configuration sets one.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::Serialize;
use sigil_actor::contracts::httpserver::{HttpRequest, HttpResponse};
use sigil_providers::LinkDefinition;
use sigil_providers::httpserver::{RequestHandler, ServerHandle, ServerLimits, serve};

use subtle::ConstantTimeEq;

use super::config::{HostConfig, contract_id};
use super::runtime::{Runtime, RuntimeLinkError};
use crate::workflow::routes::resolve_remote_routes;
use crate::workflow::scheduler::{Scheduler, WorkflowError};
use crate::workflow::spec::Workflow;

struct Admin {
    runtime: Arc<Runtime>,
    workflows: Option<Arc<Scheduler>>,
    name: String,
    labels: BTreeMap<String, String>,
    token: Option<String>,
}

/// Serves the admin endpoint of `runtime` on `address`.
pub async fn serve_admin(
    runtime: Arc<Runtime>,
    name: String,
    labels: BTreeMap<String, String>,
    token: Option<String>,
    address: &str,
    workflows: Option<Arc<Scheduler>>,
) -> std::io::Result<ServerHandle> {
    let listener = tokio::net::TcpListener::bind(address).await?;
    let handler = Arc::new(Admin {
        runtime,
        workflows,
        name,
        labels,
        token,
    });
    serve(
        listener,
        handler,
        ServerLimits {
            max_body_bytes: 64 << 10,
            timeout: Duration::from_secs(30),
        },
    )
    .await
}

/// Serves the admin endpoint configured in `config`.
pub(super) async fn serve_config(
    runtime: Arc<Runtime>,
    config: &HostConfig,
    address: &str,
    workflows: Arc<Scheduler>,
) -> std::io::Result<ServerHandle> {
    serve_admin(
        runtime,
        config.name.clone(),
        config.labels.clone(),
        config.admin_token.clone(),
        address,
        Some(workflows),
    )
    .await
}

fn respond(status: u16, content_type: &str, body: impl Into<Vec<u8>>) -> HttpResponse {
    let mut response = HttpResponse::new(status);
    response
        .headers
        .push(("content-type".to_string(), content_type.to_string()));
    response.body = body.into();
    response
}

fn json(status: u16, value: &impl Serialize) -> HttpResponse {
    match serde_json::to_vec_pretty(value) {
        Ok(mut body) => {
            body.push(b'\n');
            respond(status, "application/json", body)
        }
        Err(e) => text(500, &format!("cannot encode the answer: {e}")),
    }
}

fn text(status: u16, message: &str) -> HttpResponse {
    respond(status, "text/plain; charset=utf-8", format!("{message}\n"))
}

#[derive(Serialize)]
struct StatusBody<'a> {
    host: &'a str,
    labels: &'a BTreeMap<String, String>,
    ready: bool,
    draining: bool,
    uptime_seconds: u64,
    in_flight: usize,
    actors: Vec<ActorBody>,
    providers: Vec<ProviderBody>,
    links: usize,
}

#[derive(Serialize)]
struct ActorBody {
    name: String,
    key: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    module: Option<String>,
}

#[derive(Serialize)]
struct ProviderBody {
    name: String,
    kind: &'static str,
    contract_id: &'static str,
    healthy: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    problem: Option<String>,
    links: usize,
}

#[derive(Serialize)]
struct LinkBody {
    actor: String,
    actor_key: String,
    contract_id: String,
    link_name: String,
    provider: String,
    config: BTreeMap<String, String>,
}

impl Admin {
    async fn status(&self) -> (bool, HttpResponse) {
        let s = self.runtime.status().await;
        let body = StatusBody {
            host: &self.name,
            labels: &self.labels,
            ready: s.ready,
            draining: s.draining,
            uptime_seconds: s.uptime.as_secs(),
            in_flight: s.in_flight,
            actors: s
                .actors
                .into_iter()
                .map(|(name, key)| ActorBody {
                    module: self.runtime.actor_origin(&key),
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
                    kind: p.kind,
                    contract_id: p.contract_id,
                    links: p.links,
                })
                .collect(),
            links: s.links,
        };
        (s.ready, json(200, &body))
    }

    fn authorized(&self, request: &HttpRequest) -> bool {
        let Some(token) = &self.token else {
            return true;
        };
        request
            .header("authorization")
            .and_then(|h| h.strip_prefix("Bearer "))
            // Constant time: how long it takes says nothing about the token.
            .is_some_and(|given| bool::from(given.trim().as_bytes().ct_eq(token.as_bytes())))
    }

    async fn put_link(&self, request: &HttpRequest) -> HttpResponse {
        let mut definition: LinkDefinition = match serde_json::from_slice(&request.body) {
            Ok(d) => d,
            Err(e) => {
                return text(
                    400,
                    &format!(
                        "the body is not a link definition ({e}); send JSON with actor, \
                         contract_id, provider and optionally link_name and config"
                    ),
                );
            }
        };
        definition.contract_id = contract_id(&definition.contract_id);
        match self.runtime.add_link(&definition).await {
            Ok(()) => text(201, "link added"),
            Err(e @ RuntimeLinkError::NoSuchActor(_)) => text(404, &e.to_string()),
            Err(e @ RuntimeLinkError::Denied(_)) => text(403, &e.to_string()),
            Err(e @ RuntimeLinkError::Link(sigil_providers::LinkError::Duplicate { .. })) => {
                text(409, &e.to_string())
            }
            Err(e) => text(400, &e.to_string()),
        }
    }

    async fn delete_link(&self, rest: &str) -> HttpResponse {
        let parts: Vec<&str> = rest.split('/').collect();
        let [actor, contract, name] = parts.as_slice() else {
            return text(
                400,
                "use DELETE /v1/links/{actor}/{contract_id}/{link_name}",
            );
        };
        match self
            .runtime
            .remove_link(actor, &contract_id(contract), name)
            .await
        {
            Ok(_) => text(200, "link removed"),
            Err(e) => text(404, &e.to_string()),
        }
    }

    async fn runs(&self, request: &HttpRequest, rest: &str) -> HttpResponse {
        let Some(scheduler) = &self.workflows else {
            return text(404, "this host runs no workflows");
        };
        let changes = request.method != "GET";
        if changes && !self.authorized(request) {
            return text(
                401,
                "this admin endpoint needs `Authorization: Bearer <admin_token>`",
            );
        }
        let found = |r: Result<_, WorkflowError>| match r {
            Ok(state) => json(200, &state),
            Err(e @ WorkflowError::NoSuchRun(_)) => text(404, &e.to_string()),
            Err(e) => text(503, &e.to_string()),
        };
        match (request.method.as_str(), rest) {
            ("GET", "") => match scheduler.list().await {
                Ok(runs) => {
                    let list: Vec<_> = runs
                        .iter()
                        .map(|r| {
                            serde_json::json!({
                                "id": r.id,
                                "workflow": r.workflow,
                                "status": r.status,
                                "created_ms": r.created_ms,
                            })
                        })
                        .collect();
                    json(200, &list)
                }
                Err(e) => text(503, &e.to_string()),
            },
            ("POST", "") => {
                #[derive(serde::Deserialize)]
                struct Submit {
                    workflow: serde_json::Value,
                    #[serde(default)]
                    inputs: BTreeMap<String, serde_json::Value>,
                }
                let body: Submit = match serde_json::from_slice(&request.body) {
                    Ok(b) => b,
                    Err(e) => {
                        return text(
                            400,
                            &format!(
                                "the body is not a run request ({e}); send JSON with                                  `workflow` (a spec object or its YAML text) and `inputs`"
                            ),
                        );
                    }
                };
                let submitted = async {
                    let workflow = Workflow::from_value(&body.workflow)?;
                    let routes = resolve_remote_routes(&workflow, Some(&self.runtime)).await?;
                    scheduler.submit(&workflow, body.inputs, &routes).await
                }
                .await;
                match submitted {
                    Ok(id) => json(201, &serde_json::json!({ "run": id })),
                    Err(e @ (WorkflowError::Spec(_) | WorkflowError::NoSuchRun(_))) => {
                        text(400, &e.to_string())
                    }
                    Err(e @ WorkflowError::NoHost { .. }) => text(409, &e.to_string()),
                    Err(e) => text(503, &e.to_string()),
                }
            }
            ("GET", id) => found(scheduler.status(id).await),
            ("DELETE", id) if !id.is_empty() => found(scheduler.cancel(id).await),
            _ => text(405, "method not allowed"),
        }
    }

    fn links(&self) -> HttpResponse {
        let links: Vec<LinkBody> = self
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
            .collect();
        json(200, &links)
    }
}

#[async_trait]
impl RequestHandler for Admin {
    async fn handle(&self, request: HttpRequest) -> HttpResponse {
        let path = request.path.trim_end_matches('/');
        match (request.method.as_str(), path) {
            ("GET", "/healthz") => text(200, "ok"),
            ("GET", "/readyz") => {
                let (ready, mut response) = self.status().await;
                if !ready {
                    response.status = 503;
                }
                response
            }
            ("GET", "/metrics") => {
                // Refresh the provider health gauges before encoding.
                let _ = self.runtime.status().await;
                respond(
                    200,
                    "text/plain; version=0.0.4; charset=utf-8",
                    self.runtime.metrics().encode(),
                )
            }
            ("GET", "/v1/status") => self.status().await.1,
            ("GET", "/v1/links") => self.links(),
            ("PUT" | "POST", "/v1/links") => {
                if !self.authorized(&request) {
                    return text(
                        401,
                        "this admin endpoint needs `Authorization: Bearer <admin_token>`",
                    );
                }
                self.put_link(&request).await
            }
            ("DELETE", p) if p.starts_with("/v1/links/") => {
                if !self.authorized(&request) {
                    return text(
                        401,
                        "this admin endpoint needs `Authorization: Bearer <admin_token>`",
                    );
                }
                self.delete_link(&p["/v1/links/".len()..]).await
            }
            (_, "/v1/runs") => self.runs(&request, "").await,
            (_, p) if p.starts_with("/v1/runs/") => {
                self.runs(&request, &p["/v1/runs/".len()..]).await
            }
            (_, "/healthz" | "/readyz" | "/metrics" | "/v1/status" | "/v1/links") => {
                text(405, "method not allowed")
            }
            _ => text(
                404,
                "not found; see /healthz, /readyz, /metrics, /v1/status, /v1/links, /v1/runs",
            ),
        }
    }
}
