//! `wasmcloud:httpserver`: HTTP requests delivered to actors.
//!
//! [`HttpServer`] (kind `hyper`) opens one listener per link, on the address of the link's
//! configuration. Each request it receives becomes an [`HttpRequest`]; the provider
//! invokes the linked actor's `HandleRequest` operation with it, through the host, and
//! writes the [`HttpResponse`] the actor answers with. HTTP/1.1 (with keep-alive) and
//! HTTP/2 with prior knowledge are served; TLS is left to a proxy in front.
//!
//! What goes wrong is answered by the provider itself:
//!
//! | case | status |
//! |---|---|
//! | body larger than the link's `max_body` (declared or streamed) | `413`, the actor is not invoked |
//! | body not received within `timeout` | `408` |
//! | actor not answering within `timeout` | `504` |
//! | actor failing (error, trap, unknown actor) | `500`, `the actor failed to handle the request` |
//! | actor answering something that is not an `HttpResponse` | `500` |
//! | actor answering a status outside `200..=599` | `500` |
//!
//! Error texts from the actor go to the log, never to the client. Response header names
//! or values that are not valid HTTP are dropped (with a warning), and so are the headers
//! that frame the message (`content-length`, `transfer-encoding`, `connection`, ...):
//! the server sets those.
//!
//! # Configuration
//!
//! Provider configuration ([`HttpServer::from_config`]):
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `default_max_body` | `1MiB` | the body limit of links that set no `max_body` |
//! | `default_timeout` | `30s` | the timeout of links that set no `timeout` |
//!
//! Link configuration:
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `address` | required | where to listen, `IP:port`, e.g. `127.0.0.1:8080` (port `0` picks a free one; see [`HttpServer::bound_address`]) |
//! | `max_body` | `default_max_body` | the largest request body, e.g. `64KiB` |
//! | `timeout` | `default_timeout` | how long the body may take to arrive, and the actor to answer, e.g. `5s` |
//!
//! Unknown keys are refused, at both levels, and so is a link whose address cannot be
//! bound (in use, not local), with an error that names the address.
//!
//! # Isolation
//!
//! Each link's listener invokes only that link's actor: the handler of a listener holds
//! the public key of one actor and nothing else, and two links never share a listener.
//! The actor never sees a socket: it receives the request as a value, after the provider
//! has read and bounded it, and answers with a value the provider checks and writes.
//!
//! # Serving plain Rust
//!
//! The HTTP stack is reusable: [`serve`] runs a listener with any [`RequestHandler`]
//! ([`handler_fn`] wraps a closure); the provider runs the same [`serve`] with an
//! [`ActorHandler`]. Removing a link shuts its listener down gracefully, and quiescing or
//! stopping the provider (graceful drain on SIGTERM) shuts them all down: the port closes
//! at once, and requests in flight finish, for up to [`SHUTDOWN_GRACE`].

mod server;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use sigil_actor::contracts::httpserver::{CONTRACT_ID, OP_HANDLE_REQUEST};
use sigil_actor::contracts::{decode, encode};

pub use server::{
    DEFAULT_MAX_BODY, DEFAULT_TIMEOUT, RequestHandler, ServerHandle, ServerLimits, handler_fn,
    serve,
};
pub use sigil_actor::contracts::httpserver::{HttpRequest, HttpResponse};

use crate::{ActorInvoker, Health, Invocation, Link, LinkConfig, LinkKey, Provider, ProviderError};

/// How long removing a link or stopping the provider waits for requests in flight.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// The provider configuration keys.
const PROVIDER_KEYS: &[&str] = &["default_max_body", "default_timeout"];

/// The link configuration keys.
const LINK_KEYS: &[&str] = &["address", "max_body", "timeout"];

/// A [`RequestHandler`] that delivers each request to one actor's `HandleRequest`
/// through the host.
pub struct ActorHandler {
    host: Arc<dyn ActorInvoker>,
    actor: String,
}

impl std::fmt::Debug for ActorHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ActorHandler")
            .field("actor", &self.actor)
            .finish_non_exhaustive()
    }
}

impl ActorHandler {
    /// A handler that invokes the actor with public key `actor` through `host`.
    pub fn new(host: Arc<dyn ActorInvoker>, actor: impl Into<String>) -> Self {
        ActorHandler {
            host,
            actor: actor.into(),
        }
    }
}

#[async_trait]
impl RequestHandler for ActorHandler {
    async fn handle(&self, request: HttpRequest) -> HttpResponse {
        use tracing::Instrument;
        // A request inside a trace (W3C `traceparent`) continues it; with export off the
        // span is disabled and this costs nothing. Named by the method alone, as the HTTP
        // conventions say when there is no route template (a path would make a name per URL).
        let span = tracing::debug_span!(
            "http.server.request",
            otel.name = %request.method,
            otel.kind = "server",
            http.request.method = %request.method,
            url.path = %request.path,
            sigil.actor = %self.actor,
            http.response.status_code = tracing::field::Empty,
        );
        if !span.is_disabled() {
            use tracing_opentelemetry::OpenTelemetrySpanExt;
            let parent = opentelemetry::global::get_text_map_propagator(|p| {
                p.extract(&HeaderExtractor(&request.headers))
            });
            let _ = span.set_parent(parent);
        }
        let response = self.answer(request).instrument(span.clone()).await;
        span.record("http.response.status_code", response.status);
        response
    }
}

/// Reads W3C trace context from a request's headers (names compared without case).
struct HeaderExtractor<'a>(&'a [(String, String)]);

impl opentelemetry::propagation::Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.as_str())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(k, _)| k.as_str()).collect()
    }
}

impl ActorHandler {
    async fn answer(&self, request: HttpRequest) -> HttpResponse {
        let payload = match encode(&request) {
            Ok(payload) => payload,
            Err(e) => {
                tracing::error!(actor = %self.actor, error = %e, "cannot encode an HTTP request");
                return server::text(500, "cannot encode the request");
            }
        };
        match self
            .host
            .invoke_actor(&self.actor, OP_HANDLE_REQUEST, payload)
            .await
        {
            Ok(answer) => match decode::<HttpResponse>(&answer) {
                Ok(response) => response,
                Err(e) => {
                    tracing::error!(
                        actor = %self.actor,
                        method = %request.method,
                        path = %request.path,
                        error = %e,
                        "the actor answered a malformed HttpResponse"
                    );
                    server::text(500, "the actor answered a malformed response")
                }
            },
            Err(e) => {
                tracing::error!(
                    actor = %self.actor,
                    method = %request.method,
                    path = %request.path,
                    error = %e,
                    "the actor failed to handle an HTTP request"
                );
                server::text(500, "the actor failed to handle the request")
            }
        }
    }
}

/// The HTTP server provider: one listener per link, each delivering to its link's actor.
pub struct HttpServer {
    defaults: ServerLimits,
    host: RwLock<Option<Arc<dyn ActorInvoker>>>,
    listeners: Mutex<HashMap<LinkKey, ServerHandle>>,
    stopped: RwLock<bool>,
}

impl std::fmt::Debug for HttpServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let listeners: Vec<_> = self
            .listeners()
            .iter()
            .map(|(key, handle)| (key.clone(), handle.local_addr()))
            .collect();
        f.debug_struct("HttpServer")
            .field("defaults", &self.defaults)
            .field("listeners", &listeners)
            .finish_non_exhaustive()
    }
}

impl HttpServer {
    /// A provider configured by `config` (`default_max_body`, `default_timeout`).
    pub fn from_config(config: &LinkConfig) -> Result<Self, ProviderError> {
        config.only(PROVIDER_KEYS)?;
        let defaults = ServerLimits {
            max_body_bytes: config.bytes("default_max_body", DEFAULT_MAX_BODY)?,
            timeout: positive(
                "default_timeout",
                config.duration("default_timeout", DEFAULT_TIMEOUT)?,
            )?,
        };
        Ok(HttpServer {
            defaults,
            host: RwLock::new(None),
            listeners: Mutex::new(HashMap::new()),
            stopped: RwLock::new(false),
        })
    }

    /// The limits of links that set none.
    pub fn default_limits(&self) -> ServerLimits {
        self.defaults
    }

    /// The address the listener of the link `link_name` of the actor with public key
    /// `actor_subject` is bound to, if that link is served.
    pub fn bound_address(&self, actor_subject: &str, link_name: &str) -> Option<SocketAddr> {
        self.listeners()
            .get(&LinkKey {
                actor: actor_subject.to_string(),
                link_name: link_name.to_string(),
            })
            .map(ServerHandle::local_addr)
    }

    fn listeners(&self) -> MutexGuard<'_, HashMap<LinkKey, ServerHandle>> {
        self.listeners.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn host(&self) -> Option<Arc<dyn ActorInvoker>> {
        self.host.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn is_stopped(&self) -> bool {
        *self.stopped.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Refuses new links, closes every listener and waits for the requests in flight
    /// (for up to [`SHUTDOWN_GRACE`]).
    async fn close_all(&self) {
        *self.stopped.write().unwrap_or_else(|e| e.into_inner()) = true;
        let handles: Vec<ServerHandle> = self.listeners().drain().map(|(_, h)| h).collect();
        if handles.is_empty() {
            return;
        }
        let count = handles.len();
        futures::future::join_all(handles.into_iter().map(|h| h.shutdown(SHUTDOWN_GRACE))).await;
        tracing::info!(listeners = count, "HTTP listeners closed");
    }

    /// The address and limits of `link`, from its configuration.
    fn link_settings(&self, link: &Link) -> Result<(SocketAddr, ServerLimits), ProviderError> {
        let config = &link.config;
        config.only(LINK_KEYS)?;
        let text = config.require("address")?;
        let address: SocketAddr = text.parse().map_err(|_| {
            ProviderError::Config(format!(
                "`address` = {text:?} is not an address to listen on; write it like \
                 \"127.0.0.1:8080\" or \"0.0.0.0:8080\""
            ))
        })?;
        let limits = ServerLimits {
            max_body_bytes: config.bytes("max_body", self.defaults.max_body_bytes)?,
            timeout: positive(
                "timeout",
                config.duration("timeout", self.defaults.timeout)?,
            )?,
        };
        Ok((address, limits))
    }
}

/// Refuses a zero duration for `key`.
fn positive(key: &str, duration: Duration) -> Result<Duration, ProviderError> {
    if duration.is_zero() {
        Err(ProviderError::Config(format!(
            "`{key}` must be more than 0"
        )))
    } else {
        Ok(duration)
    }
}

#[async_trait]
impl Provider for HttpServer {
    fn contract_id(&self) -> &'static str {
        CONTRACT_ID
    }

    fn kind(&self) -> &'static str {
        "hyper"
    }

    async fn start(&self, host: Arc<dyn ActorInvoker>) -> Result<(), ProviderError> {
        *self.host.write().unwrap_or_else(|e| e.into_inner()) = Some(host);
        Ok(())
    }

    async fn check_link(&self, link: &Link) -> Result<(), ProviderError> {
        self.link_settings(link).map(drop)
    }

    async fn link_added(&self, link: &Link) -> Result<(), ProviderError> {
        let (address, limits) = self.link_settings(link)?;
        let (Some(host), false) = (self.host(), self.is_stopped()) else {
            return Err(ProviderError::unavailable(
                CONTRACT_ID,
                "the HTTP server provider is not running",
            ));
        };
        let key = link.key();
        if self.listeners().contains_key(&key) {
            return Err(ProviderError::Config(format!(
                "link `{}` of actor {} is served already",
                link.link_name,
                link.actor.describe()
            )));
        }
        let listener = tokio::net::TcpListener::bind(address).await.map_err(|e| {
            ProviderError::Config(format!(
                "cannot listen on {address}: {e}; free the port or change `address`"
            ))
        })?;
        let handler = Arc::new(ActorHandler::new(host, link.actor.subject.clone()));
        let handle = serve(listener, handler, limits)
            .await
            .map_err(|e| ProviderError::Config(format!("cannot serve on {address}: {e}")))?;
        let bound = handle.local_addr();
        let refused = {
            let mut listeners = self.listeners();
            if listeners.contains_key(&key) || self.is_stopped() {
                Some(handle)
            } else {
                listeners.insert(key, handle);
                None
            }
        };
        if let Some(handle) = refused {
            // Another add of the same link won the race, or the provider stopped meanwhile.
            handle.shutdown(Duration::ZERO).await;
            return Err(ProviderError::Config(format!(
                "link `{}` of actor {} is served already",
                link.link_name,
                link.actor.describe()
            )));
        }
        tracing::info!(
            actor = %link.actor.name,
            link = %link.link_name,
            address = %bound,
            max_body = limits.max_body_bytes,
            timeout = ?limits.timeout,
            "HTTP listener serving"
        );
        Ok(())
    }

    async fn link_removed(&self, link: &Link) {
        let handle = self.listeners().remove(&link.key());
        if let Some(handle) = handle {
            let address = handle.local_addr();
            handle.shutdown(SHUTDOWN_GRACE).await;
            tracing::info!(
                actor = %link.actor.name,
                link = %link.link_name,
                %address,
                "HTTP listener closed"
            );
        }
    }

    async fn invoke(&self, call: Invocation<'_>) -> Result<Vec<u8>, ProviderError> {
        // Requests flow from the provider to actors; actors call nothing on it.
        Err(ProviderError::unknown_operation(
            CONTRACT_ID,
            call.operation,
        ))
    }

    async fn health(&self) -> Health {
        Health::Healthy
    }

    async fn quiesce(&self) {
        self.close_all().await;
    }

    async fn stop(&self) {
        self.close_all().await;
    }
}
