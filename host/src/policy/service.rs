//! An external policy decision service, asked over NATS request/reply.
//!
//! The request is a JSON object `{"point": "start" | "link" | "invoke", "input": {...}}`
//! (the input document of that point); the answer is `{"allow": true}` or
//! `{"allow": false, "reason": "..."}`. No answer within the timeout, no service listening,
//! or an answer that is not such an object is a denial: the service fails closed.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::runtime::RuntimeFlavor;

use super::{Caching, Decision, DecisionFuture, DecisionPoint, InputUse, PolicyDecider};

/// Why the service could not be reached at start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceError {
    /// The NATS server did not accept the connection.
    #[error("cannot connect to the policy service's NATS server {url}: {message}")]
    Connect {
        /// The server URL.
        url: String,
        /// The client's message.
        message: String,
    },
}

/// A request to the decision service.
#[derive(Debug, Serialize)]
pub struct ServiceRequest<'a> {
    /// The decision point: `start`, `link` or `invoke`.
    pub point: &'static str,
    /// The point's input document.
    pub input: &'a serde_json::Value,
}

/// The service's answer.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceAnswer {
    /// Whether to go ahead.
    pub allow: bool,
    /// Why not, when `allow` is false.
    #[serde(default)]
    pub reason: Option<String>,
}

/// A decision service on a NATS subject.
pub struct PolicyService {
    client: async_nats::Client,
    subject: String,
    timeout: Duration,
    cache_for: Duration,
    runtime: tokio::runtime::Handle,
}

impl std::fmt::Debug for PolicyService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyService")
            .field("subject", &self.subject)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl PolicyService {
    /// Connects to the NATS server at `url`; decisions are asked on `subject`, each
    /// within `timeout`. Must be called inside a tokio runtime, which then carries the
    /// requests of synchronous callers.
    pub async fn connect(
        url: &str,
        subject: impl Into<String>,
        timeout: Duration,
    ) -> Result<Self, ServiceError> {
        let client = async_nats::connect(url)
            .await
            .map_err(|e| ServiceError::Connect {
                url: url.to_string(),
                message: e.to_string(),
            })?;
        Ok(PolicyService {
            client,
            subject: subject.into(),
            timeout,
            cache_for: Duration::ZERO,
            runtime: tokio::runtime::Handle::current(),
        })
    }

    /// Reuses invocation answers for up to `ttl` (zero, the default, asks every time).
    pub fn cache_for(mut self, ttl: Duration) -> Self {
        self.cache_for = ttl;
        self
    }

    async fn ask(
        client: async_nats::Client,
        subject: String,
        timeout: Duration,
        point: DecisionPoint,
        body: Result<Vec<u8>, String>,
    ) -> Decision {
        let body = match body {
            Ok(b) => b,
            Err(e) => return Decision::Deny(format!("cannot encode the policy request: {e}")),
        };
        let reply = tokio::time::timeout(timeout, client.request(subject.clone(), body.into()));
        match reply.await {
            Err(_) => Decision::Deny(format!(
                "the policy service on {subject:?} did not answer the {point} decision within \
                 {timeout:?} (failing closed)"
            )),
            Ok(Err(e)) if e.kind() == async_nats::client::RequestErrorKind::NoResponders => {
                Decision::Deny(format!(
                    "no policy service listens on {subject:?} (failing closed)"
                ))
            }
            Ok(Err(e)) => Decision::Deny(format!(
                "the policy service on {subject:?} could not be asked: {e} (failing closed)"
            )),
            Ok(Ok(message)) => match serde_json::from_slice::<ServiceAnswer>(&message.payload) {
                Ok(ServiceAnswer { allow: true, .. }) => Decision::Allow,
                Ok(ServiceAnswer {
                    allow: false,
                    reason,
                }) => Decision::Deny(
                    reason
                        .filter(|r| !r.is_empty())
                        .unwrap_or_else(|| "denied by the policy service".to_string()),
                ),
                Err(e) => Decision::Deny(format!(
                    "the policy service on {subject:?} answered with something that is not a \
                     decision ({e}); expected {{\"allow\": bool, \"reason\": string}} \
                     (failing closed)"
                )),
            },
        }
    }

    fn request(
        &self,
        point: DecisionPoint,
        input: &serde_json::Value,
    ) -> impl std::future::Future<Output = Decision> + Send + 'static {
        let body = serde_json::to_vec(&ServiceRequest {
            point: point.as_str(),
            input,
        })
        .map_err(|e| e.to_string());
        Self::ask(
            self.client.clone(),
            self.subject.clone(),
            self.timeout,
            point,
            body,
        )
    }
}

impl PolicyDecider for PolicyService {
    fn describe(&self) -> String {
        format!("policy service on NATS subject {:?}", self.subject)
    }

    fn decide<'a>(
        &'a self,
        point: DecisionPoint,
        input: &'a serde_json::Value,
    ) -> DecisionFuture<'a> {
        Box::pin(self.request(point, input))
    }

    fn decide_blocking(&self, point: DecisionPoint, input: &serde_json::Value) -> Decision {
        let request = self.request(point, input);
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.runtime.spawn(async move {
            let _ = tx.send(request.await);
        });
        // The request times itself out; the margin covers a runtime slow to run it.
        let wait = self.timeout + Duration::from_secs(1);
        let receive = move || {
            rx.recv_timeout(wait).unwrap_or_else(|_| {
                Decision::Deny(format!(
                    "the policy service did not answer the {point} decision within {wait:?} \
                     (failing closed)"
                ))
            })
        };
        match tokio::runtime::Handle::try_current() {
            Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(receive)
            }
            _ => receive(),
        }
    }

    fn caching(&self) -> Caching {
        if self.cache_for.is_zero() {
            Caching::Never
        } else {
            Caching::For(self.cache_for, InputUse::ALL)
        }
    }
}
