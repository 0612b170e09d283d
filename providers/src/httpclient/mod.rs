//! The `wasmcloud:httpclient` provider: outgoing HTTP requests on behalf of actors, only to
//! the hosts each actor's link allows.
//!
//! [`HttpClient`] (kind `http`) sends each [`Request`] with one shared connection pool
//! (rustls on `ring`, the operating system's trust store; HTTP/1.1 and HTTP/2) and answers
//! with the whole [`HttpResponse`]. Any status the server answers with is a successful
//! call; a refused host, a DNS, connection or TLS failure, an oversized body or the timeout
//! is an error.
//!
//! **Provider configuration**
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `user_agent` | `sigil-httpclient/<version>` | The `user-agent` sent when the actor sets none. |
//!
//! **Link configuration**
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `allow` | none: every request is refused | Comma-separated egress allowlist: `host` (any port), `host:port`, `[::1]:8080`, `*.example.com` (its subdomains, not the domain itself; also with `:port`), or `*` (anything; discouraged). |
//! | `timeout` | `30s` | The longest a request may take, redirects and body included. An actor's `timeout_ms` may only shorten it. |
//! | `max_request_bytes` | `16MiB` | The largest request body an actor may send. |
//! | `max_response_bytes` | `16MiB` | The largest response body read; a larger one fails the call (the body is read with this cap, never buffered unbounded). |
//!
//! **Isolation.** Deny by default: a link without `allow` refuses every request. Only
//! `http` and `https` URLs are sent. The host and port of every request are checked
//! against the link's allowlist before any connection is made, and so is every redirect
//! hop: redirects (`301`, `302`, `303`, `307`, `308`; at most 10) are followed by the
//! provider itself, and one to a host the link does not allow fails the call with a
//! `denied` error instead of being followed. Credentials (`authorization`, `cookie`,
//! `proxy-authorization`) are dropped when a redirect leaves the origin. The allowlist
//! names hosts as the URL writes them (an IP address must be listed as such); it does not
//! restrict what a permitted name resolves to. Hop-by-hop headers an actor sets (`host`,
//! `content-length`, `transfer-encoding`, `connection`) are ignored: the provider writes
//! them.

mod allow;
pub(crate) mod tls;

use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, StatusCode, Url};
use sigil_actor::contracts::httpclient::{CONTRACT_ID, HttpResponse, OP_REQUEST, Request};

use crate::{Invocation, Link, LinkConfig, LinkTable, Provider, ProviderError, encode};
use allow::Allowlist;

/// The most redirects followed for one request.
const MAX_REDIRECTS: usize = 10;
/// The default of the link key `timeout`.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// The default of the link keys `max_request_bytes` and `max_response_bytes`.
const DEFAULT_MAX_BODY: u64 = 16 << 20;
/// How long establishing a connection may take, within the request's timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Headers the provider writes itself.
const IGNORED_HEADERS: &[&str] = &["host", "content-length", "transfer-encoding", "connection"];
/// Headers dropped when a redirect leaves the origin.
const CREDENTIAL_HEADERS: &[&str] = &["authorization", "cookie", "proxy-authorization"];

/// What a link configured.
#[derive(Debug)]
struct LinkState {
    allow: Allowlist,
    timeout: Duration,
    max_request_bytes: u64,
    max_response_bytes: u64,
}

impl LinkState {
    fn from_config(config: &LinkConfig) -> Result<Self, ProviderError> {
        config.only(&[
            "allow",
            "timeout",
            "max_request_bytes",
            "max_response_bytes",
        ])?;
        let allow = Allowlist::parse(&config.list("allow"))?;
        let timeout = config.duration("timeout", DEFAULT_TIMEOUT)?;
        if timeout.is_zero() {
            return Err(ProviderError::Config(
                "`timeout` must be positive".to_string(),
            ));
        }
        Ok(LinkState {
            allow,
            timeout,
            max_request_bytes: config.bytes("max_request_bytes", DEFAULT_MAX_BODY)?,
            max_response_bytes: config.bytes("max_response_bytes", DEFAULT_MAX_BODY)?,
        })
    }
}

/// The HTTP client provider (`wasmcloud:httpclient`, kind `http`).
#[derive(Debug)]
pub struct HttpClient {
    client: reqwest::Client,
    links: LinkTable<LinkState>,
}

impl HttpClient {
    /// The provider's kind.
    pub const KIND: &'static str = "http";

    /// A provider configured by `config` (key `user_agent`, optional).
    pub fn from_config(config: &LinkConfig) -> Result<Self, ProviderError> {
        config.only(&["user_agent"])?;
        let user_agent = config
            .get("user_agent")
            .map(str::to_string)
            .unwrap_or_else(|| format!("sigil-httpclient/{}", env!("CARGO_PKG_VERSION")));
        let user_agent = HeaderValue::from_str(&user_agent).map_err(|_| {
            ProviderError::Config(format!(
                "`user_agent` = {user_agent:?} is not a valid header value"
            ))
        })?;
        let client = tls::reqwest_builder()?
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(user_agent)
            .connect_timeout(CONNECT_TIMEOUT)
            .build()
            .map_err(|e| ProviderError::Config(format!("cannot build the HTTP client: {e}")))?;
        Ok(HttpClient {
            client,
            links: LinkTable::new(CONTRACT_ID),
        })
    }

    async fn request(
        &self,
        link: &LinkState,
        request: Request,
        deadline: Instant,
    ) -> Result<HttpResponse, ProviderError> {
        let method = parse_method(&request.method)?;
        let url = parse_url(&request.url)?;
        let mut headers = parse_headers(&request.headers)?;
        inject_trace_context(&mut headers);
        let body_len = request.body.len() as u64;
        if body_len > link.max_request_bytes {
            return Err(ProviderError::Denied(format!(
                "the request body ({body_len} bytes) is larger than the link's \
                 max_request_bytes ({} bytes)",
                link.max_request_bytes
            )));
        }
        let mut timeout = link.timeout;
        if let Some(ms) = request.timeout_ms.filter(|ms| *ms > 0) {
            timeout = timeout.min(Duration::from_millis(u64::from(ms)));
        }
        timeout = timeout.min(deadline.saturating_duration_since(Instant::now()));
        let target = authority(&url);
        let exchange = self.exchange(link, method, url, headers, Bytes::from(request.body));
        match tokio::time::timeout(timeout, exchange).await {
            Ok(result) => result,
            Err(_) => Err(ProviderError::unavailable(
                CONTRACT_ID,
                format!("no complete response from {target} within {timeout:?} (timed out)"),
            )),
        }
    }

    /// Sends the request, following redirects to allowed hosts, and reads the response.
    async fn exchange(
        &self,
        link: &LinkState,
        mut method: Method,
        mut url: Url,
        mut headers: HeaderMap,
        mut body: Bytes,
    ) -> Result<HttpResponse, ProviderError> {
        check_allowed(link, &url, None)?;
        let mut redirects = 0;
        loop {
            let mut builder = self
                .client
                .request(method.clone(), url.clone())
                .headers(headers.clone());
            if !body.is_empty() {
                builder = builder.body(body.clone());
            }
            let response = builder.send().await.map_err(|e| send_error(&url, &e))?;
            let status = response.status();
            if let Some(next) = redirect_target(&url, &response) {
                if redirects == MAX_REDIRECTS {
                    return Err(ProviderError::Failed(format!(
                        "too many redirects (more than {MAX_REDIRECTS}) from {}",
                        authority(&url)
                    )));
                }
                redirects += 1;
                check_allowed(link, &next, Some(&url))?;
                let see_other = status == StatusCode::SEE_OTHER && method != Method::HEAD;
                let moved = matches!(status, StatusCode::MOVED_PERMANENTLY | StatusCode::FOUND);
                if see_other || (moved && method == Method::POST) {
                    method = Method::GET;
                    body = Bytes::new();
                    headers.remove(reqwest::header::CONTENT_TYPE);
                    headers.remove(reqwest::header::CONTENT_ENCODING);
                }
                if next.origin() != url.origin() {
                    for name in CREDENTIAL_HEADERS {
                        headers.remove(*name);
                    }
                }
                url = next;
                continue;
            }
            return read_response(link, &url, response).await;
        }
    }
}

/// The next URL when `response` is a redirect with a usable `location`.
fn redirect_target(url: &Url, response: &reqwest::Response) -> Option<Url> {
    let status = response.status();
    if !matches!(status.as_u16(), 301 | 302 | 303 | 307 | 308) {
        return None;
    }
    let location = response.headers().get(reqwest::header::LOCATION)?;
    url.join(location.to_str().ok()?).ok()
}

/// Reads the status, headers and body (no more than the link allows).
async fn read_response(
    link: &LinkState,
    url: &Url,
    mut response: reqwest::Response,
) -> Result<HttpResponse, ProviderError> {
    let max = link.max_response_bytes;
    let too_large = |size: String| {
        ProviderError::Denied(format!(
            "the response from {} is larger than the link's max_response_bytes ({max} bytes): \
             {size}",
            authority(url)
        ))
    };
    if let Some(length) = response.content_length()
        && length > max
    {
        return Err(too_large(format!("content-length is {length}")));
    }
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .map(|(name, value)| {
            (
                name.as_str().to_string(),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            )
        })
        .collect();
    let hint = response.content_length().unwrap_or(0).min(1 << 20);
    let mut body = Vec::with_capacity(usize::try_from(hint).unwrap_or(0));
    while let Some(chunk) = response.chunk().await.map_err(|e| send_error(url, &e))? {
        if (body.len() + chunk.len()) as u64 > max {
            return Err(too_large("the body did not end there".to_string()));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(HttpResponse {
        status,
        headers,
        body,
    })
}

/// `host:port` of `url`, for messages.
fn authority(url: &Url) -> String {
    match (url.host_str(), url.port_or_known_default()) {
        (Some(host), Some(port)) => format!("{host}:{port}"),
        (Some(host), None) => host.to_string(),
        _ => url.to_string(),
    }
}

/// Refuses a URL whose scheme is not HTTP or whose host and port the link does not allow.
fn check_allowed(
    link: &LinkState,
    url: &Url,
    redirected_from: Option<&Url>,
) -> Result<(), ProviderError> {
    let how = match redirected_from {
        Some(from) => format!("a redirect from {} to", authority(from)),
        None => "a request to".to_string(),
    };
    if !matches!(url.scheme(), "http" | "https") {
        return Err(ProviderError::Denied(format!(
            "{how} {url} uses scheme `{}`; only http and https are sent",
            url.scheme()
        )));
    }
    let (Some(host), Some(port)) = (url.host_str(), url.port_or_known_default()) else {
        return Err(ProviderError::Denied(format!(
            "{how} {url}, which names no host"
        )));
    };
    if link.allow.allows(host, port) {
        return Ok(());
    }
    let followed = if redirected_from.is_some() {
        "; the redirect was not followed"
    } else {
        ""
    };
    Err(ProviderError::Denied(format!(
        "{how} host {host}:{port} is not allowed by the link's allowlist (allow: {}){followed}",
        link.allow
    )))
}

fn parse_method(method: &str) -> Result<Method, ProviderError> {
    if method.is_empty() {
        return Ok(Method::GET);
    }
    let parsed = Method::from_bytes(method.as_bytes()).map_err(|_| {
        ProviderError::invalid(OP_REQUEST, format!("{method:?} is not an HTTP method"))
    })?;
    if parsed == Method::CONNECT {
        return Err(ProviderError::invalid(
            OP_REQUEST,
            "CONNECT is not supported",
        ));
    }
    Ok(parsed)
}

fn parse_url(url: &str) -> Result<Url, ProviderError> {
    let parsed = Url::parse(url).map_err(|e| {
        ProviderError::invalid(
            OP_REQUEST,
            format!("`url` {url:?} is not an absolute URL: {e}"),
        )
    })?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(ProviderError::invalid(
            OP_REQUEST,
            format!(
                "`url` {url:?} has scheme `{}`; only http and https are supported",
                parsed.scheme()
            ),
        ));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(ProviderError::invalid(
            OP_REQUEST,
            format!("`url` {url:?} has no host"),
        ));
    }
    Ok(parsed)
}

/// Adds the W3C trace context of the current span (`traceparent`, `tracestate`) to an
/// outgoing request, replacing any the actor set, so that the server it calls continues
/// the trace. Nothing is added when traces are not exported.
fn inject_trace_context(headers: &mut HeaderMap) {
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    struct Injector<'a>(&'a mut HeaderMap);
    impl opentelemetry::propagation::Injector for Injector<'_> {
        fn set(&mut self, key: &str, value: String) {
            if let (Ok(name), Ok(value)) = (
                reqwest::header::HeaderName::from_bytes(key.as_bytes()),
                reqwest::header::HeaderValue::from_str(&value),
            ) {
                self.0.insert(name, value);
            }
        }
    }
    let span = tracing::Span::current();
    if span.is_disabled() {
        return;
    }
    let context = span.context();
    opentelemetry::global::get_text_map_propagator(|p| {
        p.inject_context(&context, &mut Injector(headers));
    });
}

fn parse_headers(headers: &[(String, String)]) -> Result<HeaderMap, ProviderError> {
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
            ProviderError::invalid(OP_REQUEST, format!("{name:?} is not a valid header name"))
        })?;
        let value = HeaderValue::from_str(value).map_err(|_| {
            ProviderError::invalid(
                OP_REQUEST,
                format!("the value of header `{name}` is not a valid header value"),
            )
        })?;
        if IGNORED_HEADERS.contains(&name.as_str()) {
            continue;
        }
        map.append(name, value);
    }
    Ok(map)
}

/// A failure to get an answer from the server at `url`.
fn send_error(url: &Url, error: &reqwest::Error) -> ProviderError {
    let what = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "cannot connect"
    } else if error.is_body() || error.is_decode() {
        "failed while reading the response"
    } else {
        "request failed"
    };
    ProviderError::unavailable(
        CONTRACT_ID,
        format!("{} {what}: {}", authority(url), error_chain(error)),
    )
}

/// An error and its sources, `: `-separated, skipping repeats.
pub(crate) fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(error);
    while let Some(e) = next {
        let text = e.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = e.source();
    }
    parts.join(": ")
}

#[async_trait]
impl Provider for HttpClient {
    fn contract_id(&self) -> &'static str {
        CONTRACT_ID
    }

    fn kind(&self) -> &'static str {
        Self::KIND
    }

    async fn check_link(&self, link: &Link) -> Result<(), ProviderError> {
        LinkState::from_config(&link.config).map(drop)
    }

    async fn link_added(&self, link: &Link) -> Result<(), ProviderError> {
        let state = LinkState::from_config(&link.config)?;
        if state.allow.is_empty() {
            tracing::warn!(
                actor = %link.actor.name,
                link = %link.link_name,
                "httpclient link has no `allow` list: every request will be refused"
            );
        } else if link.config.list("allow").iter().any(|a| a == "*") {
            tracing::warn!(
                actor = %link.actor.name,
                link = %link.link_name,
                "httpclient link allows every host (`allow = *`)"
            );
        }
        self.links.insert(link, state);
        Ok(())
    }

    async fn link_removed(&self, link: &Link) {
        self.links.remove(link);
    }

    async fn invoke(&self, call: Invocation<'_>) -> Result<Vec<u8>, ProviderError> {
        if call.operation != OP_REQUEST {
            return Err(ProviderError::unknown_operation(
                CONTRACT_ID,
                call.operation,
            ));
        }
        let link = self.links.get(call.actor, call.link_name)?;
        let request: Request = call.decode()?;
        let response = self.request(&link, request, call.deadline).await?;
        encode(&response)
    }
}
