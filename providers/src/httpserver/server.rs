//! The HTTP serving core: a hyper listener that turns each request into an
//! [`HttpRequest`], hands it to a [`RequestHandler`] and writes the [`HttpResponse`] back.
//!
//! The provider plugs in a handler that invokes an actor; a benchmark or a test can plug
//! in plain Rust. Both go through the same accept loop, connection settings, body limits,
//! timeouts and conversions.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::FutureExt;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Incoming};
use hyper::header::{self, HeaderName, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use sigil_actor::contracts::httpserver::{HttpRequest, HttpResponse};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};

/// The default cap on a request body: 1 MiB.
pub const DEFAULT_MAX_BODY: u64 = 1 << 20;

/// The default time a request may take to arrive, and its handler to answer: 30 s.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a client may take to send a request's header section before its connection
/// is closed.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// After a body over the limit is refused, how much more of it is read and thrown away
/// before the connection closes. Closing with unread data makes the TCP stack reset the
/// connection, and a reset makes the client drop the `413` it has not read yet.
const DRAIN_MAX_BYTES: u64 = 8 << 20;

/// How long the rest of a refused body is read and thrown away, at most.
const DRAIN_TIME: Duration = Duration::from_secs(5);

/// How long the accept loop pauses after a failed `accept` (out of file descriptors),
/// so that it does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// True for the response headers that frame the message or belong to the connection:
/// the server sets them, a handler's values are dropped.
fn is_connection_header(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "content-length"
            | "transfer-encoding"
            | "connection"
            | "keep-alive"
            | "proxy-connection"
            | "upgrade"
            | "te"
            | "trailer"
    )
}

/// What one request may cost the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerLimits {
    /// The largest request body accepted; a larger one is answered `413` and the
    /// connection closed, after reading and discarding the rest of the body (up to 8 MiB
    /// or 5 s) so that the client gets the answer rather than a reset.
    pub max_body_bytes: u64,
    /// How long the body may take to arrive (else `408`), and the handler to answer
    /// (else `504`).
    pub timeout: Duration,
}

impl Default for ServerLimits {
    /// [`DEFAULT_MAX_BODY`] and [`DEFAULT_TIMEOUT`].
    fn default() -> Self {
        ServerLimits {
            max_body_bytes: DEFAULT_MAX_BODY,
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

/// What answers the requests of a listener.
#[async_trait]
pub trait RequestHandler: Send + Sync + 'static {
    /// Answers one request. The server has already read the whole body within its
    /// limits; it answers `504` itself if this takes longer than the timeout.
    async fn handle(&self, request: HttpRequest) -> HttpResponse;
}

/// A [`RequestHandler`] that calls `f` for each request.
pub fn handler_fn<F, Fut>(f: F) -> Arc<dyn RequestHandler>
where
    F: Fn(HttpRequest) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = HttpResponse> + Send + 'static,
{
    Arc::new(FnHandler(f))
}

struct FnHandler<F>(F);

#[async_trait]
impl<F, Fut> RequestHandler for FnHandler<F>
where
    F: Fn(HttpRequest) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = HttpResponse> + Send + 'static,
{
    async fn handle(&self, request: HttpRequest) -> HttpResponse {
        (self.0)(request).await
    }
}

/// A running listener. Dropping it stops the listener at once and aborts its open
/// connections; [`shutdown`](ServerHandle::shutdown) lets them finish first.
#[derive(Debug)]
pub struct ServerHandle {
    local_addr: SocketAddr,
    stop: Option<oneshot::Sender<Duration>>,
    task: Option<JoinHandle<()>>,
}

impl ServerHandle {
    /// The address the listener is bound to (with the real port when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting connections (the port closes at once), lets the requests in
    /// flight finish, and returns when they have, or when `grace` has passed, after which
    /// the connections still open are closed.
    pub async fn shutdown(mut self, grace: Duration) {
        if let Some(stop) = self.stop.take() {
            // An error means the loop has ended already.
            let _ = stop.send(grace);
        }
        if let Some(task) = self.task.take()
            && let Err(e) = task.await
        {
            tracing::error!(address = %self.local_addr, error = %e, "the HTTP listener failed");
        }
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Serves HTTP/1.1 (with keep-alive) and HTTP/2 (prior knowledge) on `listener`: each
/// request goes to `handler` within `limits`. Fails only when the listener's address
/// cannot be read or no Tokio runtime is running.
pub async fn serve(
    listener: TcpListener,
    handler: Arc<dyn RequestHandler>,
    limits: ServerLimits,
) -> std::io::Result<ServerHandle> {
    let local_addr = listener.local_addr()?;
    let runtime = tokio::runtime::Handle::try_current().map_err(std::io::Error::other)?;
    let (stop, stopped) = oneshot::channel();
    let task = runtime.spawn(accept_loop(listener, handler, limits, stopped));
    tracing::debug!(address = %local_addr, "HTTP listener started");
    Ok(ServerHandle {
        local_addr,
        stop: Some(stop),
        task: Some(task),
    })
}

/// The connection settings shared by every listener.
fn connection_builder() -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .keep_alive(true);
    builder.http2().timer(TokioTimer::new());
    builder
}

async fn accept_loop(
    listener: TcpListener,
    handler: Arc<dyn RequestHandler>,
    limits: ServerLimits,
    mut stopped: oneshot::Receiver<Duration>,
) {
    let address = listener.local_addr().ok();
    let builder = connection_builder();
    let graceful = GracefulShutdown::new();
    let mut connections = JoinSet::new();
    let grace = loop {
        tokio::select! {
            grace = &mut stopped => break grace.unwrap_or(Duration::ZERO),
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    if let Err(e) = stream.set_nodelay(true) {
                        tracing::debug!(%peer, error = %e, "cannot set TCP_NODELAY");
                    }
                    let handler = handler.clone();
                    let service = hyper::service::service_fn(move |request| {
                        let handler = handler.clone();
                        async move { Ok::<_, Infallible>(respond(request, &*handler, limits).await) }
                    });
                    let connection = builder
                        .serve_connection(TokioIo::new(stream), service)
                        .into_owned();
                    let connection = graceful.watch(connection);
                    connections.spawn(async move {
                        if let Err(e) = connection.await {
                            tracing::debug!(%peer, error = %e, "HTTP connection ended with an error");
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!(?address, error = %e, "cannot accept an HTTP connection");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
            Some(done) = connections.join_next(), if !connections.is_empty() => {
                if let Err(e) = done
                    && e.is_panic()
                {
                    tracing::error!(?address, error = %e, "an HTTP connection task panicked");
                }
            }
        }
    };
    drop(listener);
    tracing::debug!(
        ?address,
        open = connections.len(),
        "HTTP listener closed; draining"
    );
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            ?address,
            open = connections.len(),
            ?grace,
            "HTTP connections still open after the grace period; closing them"
        );
        connections.abort_all();
    }
    while connections.join_next().await.is_some() {}
}

/// Serves one request: read it within the limits, ask the handler, convert the answer.
async fn respond(
    request: Request<Incoming>,
    handler: &dyn RequestHandler,
    limits: ServerLimits,
) -> Response<Full<Bytes>> {
    let http1 = request.version() < hyper::Version::HTTP_2;
    let request = match read_request(request, limits).await {
        Ok(request) => request,
        Err(refusal) => {
            let close = refusal.status == 413 && http1;
            let mut response = into_hyper(refusal);
            if close {
                // The rest of the body is being thrown away: this connection ends after it.
                response
                    .headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            return response;
        }
    };
    let method = request.method.clone();
    let path = request.path.clone();
    let answer = tokio::time::timeout(
        limits.timeout,
        AssertUnwindSafe(handler.handle(request)).catch_unwind(),
    )
    .await;
    match answer {
        Ok(Ok(response)) => into_hyper(response),
        Ok(Err(_)) => {
            tracing::error!(%method, %path, "the HTTP request handler panicked");
            into_hyper(text(500, "internal server error"))
        }
        Err(_) => {
            tracing::warn!(%method, %path, timeout = ?limits.timeout, "no response within the timeout");
            into_hyper(text(504, "no response within the timeout"))
        }
    }
}

/// Converts a hyper request into the contract's [`HttpRequest`], reading the body up to
/// the limit. `Err` is the response that refuses it.
async fn read_request(
    request: Request<Incoming>,
    limits: ServerLimits,
) -> Result<HttpRequest, HttpResponse> {
    let (parts, mut body) = request.into_parts();
    let hint = body.size_hint();
    // The size hint is the declared Content-Length: refuse an oversized body before
    // reading any of it.
    if hint.lower() > limits.max_body_bytes {
        tracing::debug!(
            length = hint.lower(),
            limit = limits.max_body_bytes,
            "request body over the limit (Content-Length)"
        );
        discard(body);
        return Err(too_large(limits));
    }
    let body = if hint.exact() == Some(0) || body.is_end_stream() {
        Vec::new()
    } else {
        let mut collected = Vec::new();
        let read = async {
            while let Some(frame) = body.frame().await {
                if let Ok(chunk) = frame?.into_data() {
                    if (collected.len() + chunk.len()) as u64 > limits.max_body_bytes {
                        return Ok(false);
                    }
                    collected.extend_from_slice(&chunk);
                }
            }
            Ok::<_, hyper::Error>(true)
        };
        let outcome = tokio::time::timeout(limits.timeout, read).await;
        match outcome {
            Ok(Ok(true)) => collected,
            Ok(Ok(false)) => {
                tracing::debug!(
                    limit = limits.max_body_bytes,
                    "request body over the limit (streamed)"
                );
                discard(body);
                return Err(too_large(limits));
            }
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "cannot read a request body");
                return Err(text(400, "cannot read the request body"));
            }
            Err(_) => {
                tracing::debug!(timeout = ?limits.timeout, "request body not received in time");
                return Err(text(408, "the request body did not arrive in time"));
            }
        }
    };

    let mut headers = Vec::with_capacity(parts.headers.len() + 1);
    for (name, value) in &parts.headers {
        match std::str::from_utf8(value.as_bytes()) {
            Ok(value) => headers.push((name.as_str().to_owned(), value.to_owned())),
            Err(_) => {
                tracing::debug!(header = %name, "dropped a request header value that is not UTF-8")
            }
        }
    }
    // HTTP/2 carries the host in the `:authority` pseudo-header; handlers look for `host`.
    if !parts.headers.contains_key(header::HOST)
        && let Some(authority) = parts.uri.authority()
    {
        headers.push((
            header::HOST.as_str().to_owned(),
            authority.as_str().to_owned(),
        ));
    }

    Ok(HttpRequest {
        method: parts.method.as_str().to_owned(),
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().unwrap_or_default().to_owned(),
        headers,
        body,
    })
}

/// Reads and throws away the rest of a refused body in the background, up to
/// [`DRAIN_MAX_BYTES`] or [`DRAIN_TIME`], so that the connection closes with nothing
/// unread (a clean close, not a reset) once the client has sent it.
fn discard(mut body: Incoming) {
    tokio::spawn(async move {
        let mut left = DRAIN_MAX_BYTES;
        let drained = tokio::time::timeout(DRAIN_TIME, async {
            while let Some(Ok(frame)) = body.frame().await {
                if let Some(chunk) = frame.data_ref() {
                    left = left.saturating_sub(chunk.len() as u64);
                    if left == 0 {
                        return false;
                    }
                }
            }
            true
        })
        .await;
        if drained != Ok(true) {
            tracing::debug!("stopped discarding a refused request body; the connection resets");
        }
    });
}

fn too_large(limits: ServerLimits) -> HttpResponse {
    text(
        413,
        format!(
            "the request body is larger than {} bytes",
            limits.max_body_bytes
        ),
    )
}

/// A short plain-text response.
pub(crate) fn text(status: u16, message: impl Into<String>) -> HttpResponse {
    let mut body = message.into().into_bytes();
    body.push(b'\n');
    HttpResponse::new(status)
        .with_header("content-type", "text/plain; charset=utf-8")
        .with_body(body)
}

/// Converts the contract's [`HttpResponse`] into a hyper response. A status outside
/// `200..=599` becomes `500`; invalid header names or values are dropped, and so are the
/// headers that frame the message (the server sets those).
fn into_hyper(response: HttpResponse) -> Response<Full<Bytes>> {
    let status = match StatusCode::from_u16(response.status) {
        Ok(status) if (200..=599).contains(&response.status) => status,
        _ => {
            tracing::warn!(
                status = response.status,
                "the handler answered an invalid status code; sending 500"
            );
            return into_hyper(text(500, "invalid response status"));
        }
    };
    let mut out = Response::new(Full::new(Bytes::from(response.body)));
    *out.status_mut() = status;
    let headers = out.headers_mut();
    headers.reserve(response.headers.len());
    for (name, value) in response.headers {
        let Ok(name) = HeaderName::from_bytes(name.as_bytes()) else {
            tracing::warn!(header = %name, "dropped a response header with an invalid name");
            continue;
        };
        if is_connection_header(&name) {
            tracing::debug!(header = %name, "dropped a connection-level response header");
            continue;
        }
        match HeaderValue::from_str(&value) {
            Ok(value) => {
                headers.append(name, value);
            }
            Err(_) => {
                tracing::warn!(header = %name, "dropped a response header with an invalid value");
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_convert() {
        let response = into_hyper(
            HttpResponse::new(201)
                .with_header("X-One", "1")
                .with_header("set-cookie", "a=1")
                .with_header("set-cookie", "b=2")
                .with_header("bad name", "x")
                .with_header("x-bad-value", "a\r\nb")
                .with_header("content-length", "999")
                .with_body("hi"),
        );
        assert_eq!(response.status(), StatusCode::CREATED);
        let headers = response.headers();
        assert_eq!(headers["x-one"], "1");
        let cookies: Vec<_> = headers.get_all("set-cookie").iter().collect();
        assert_eq!(cookies, ["a=1", "b=2"]);
        assert!(!headers.contains_key("x-bad-value"));
        assert!(!headers.contains_key("content-length"));
        assert_eq!(headers.len(), 3);
    }

    #[test]
    fn invalid_statuses_become_500() {
        for status in [0, 99, 101, 600, 1000] {
            let response = into_hyper(HttpResponse::new(status));
            assert_eq!(
                response.status(),
                StatusCode::INTERNAL_SERVER_ERROR,
                "{status}"
            );
        }
        assert_eq!(into_hyper(HttpResponse::new(599)).status().as_u16(), 599);
    }
}
