//! The host's side: a [`Provider`] that forwards links and calls to a plugin process over
//! NATS, after the plugin proved who it is.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use async_nats::{HeaderMap, RequestErrorKind};
use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use nkeys::KeyPair;
use sigil_claims::{Policy, VerifiedProviderClaims};
use tokio::task::JoinHandle;

use super::wire::{
    self, Envelope, ErrorKind, HEADER_INVOCATION, HealthResponse, Hello, IdentifyRequest,
    IdentifyResponse, LinkMessage, RequestKind, Subjects, WIRE_VERSION,
};
use crate::{ActorInvoker, Health, Invocation, Link, LinkKey, Provider, ProviderError};

/// What a host needs to reach plugins: the lattice's NATS, its name, the cluster key that
/// signs envelopes, and the claims policy a plugin's issuer must pass.
#[derive(Clone)]
pub struct Lattice {
    /// The NATS server.
    pub nats: String,
    /// The lattice name.
    pub name: String,
    /// The cluster key pair (with seed) that signs this host's envelopes.
    pub cluster: Arc<KeyPair>,
    /// Allowed issuers and revocations, for plugins' provider claims.
    pub policy: Policy,
    client: Arc<tokio::sync::OnceCell<async_nats::Client>>,
}

impl std::fmt::Debug for Lattice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lattice")
            .field("nats", &self.nats)
            .field("name", &self.name)
            .field("cluster", &self.cluster.public_key())
            .finish_non_exhaustive()
    }
}

impl Lattice {
    /// The lattice `name` on the NATS server `nats`, signing with `cluster`.
    pub fn new(nats: &str, name: &str, cluster: KeyPair, policy: Policy) -> Self {
        Lattice {
            nats: nats.to_string(),
            name: name.to_string(),
            cluster: Arc::new(cluster),
            policy,
            client: Arc::new(tokio::sync::OnceCell::new()),
        }
    }

    /// The shared NATS connection, made on first use.
    pub async fn client(&self) -> Result<async_nats::Client, ProviderError> {
        self.client
            .get_or_try_init(|| async {
                async_nats::ConnectOptions::new()
                    .name("sigil-host")
                    .connection_timeout(Duration::from_secs(5))
                    .connect(&self.nats)
                    .await
                    .map_err(|e| {
                        ProviderError::Config(format!(
                            "cannot connect to the lattice's NATS at {}: {e}",
                            self.nats
                        ))
                    })
            })
            .await
            .cloned()
    }
}

/// Interns a contract ID, so that a plugin can report it as `&'static str` like the
/// built-ins do; each distinct ID is kept once for the life of the process.
fn intern(id: &str) -> &'static str {
    static IDS: OnceLock<Mutex<HashSet<&'static str>>> = OnceLock::new();
    let mut ids = IDS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(known) = ids.get(id) {
        return known;
    }
    let leaked: &'static str = Box::leak(id.to_string().into_boxed_str());
    ids.insert(leaked);
    leaked
}

/// A plugin that proved who it is.
struct Verified {
    key: KeyPair,
    claims: VerifiedProviderClaims,
    instance: String,
}

#[derive(Default)]
struct State {
    verified: Option<Arc<Verified>>,
    links: HashMap<LinkKey, Link>,
}

/// A capability provider served by a plugin process on the lattice.
pub struct RemoteProvider {
    inner: Arc<Inner>,
    hello: Mutex<Option<JoinHandle<()>>>,
}

struct Inner {
    lattice: Lattice,
    key: String,
    contract: &'static str,
    timeout: Duration,
    subjects: Subjects,
    state: Mutex<State>,
    identifying: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for RemoteProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteProvider")
            .field("key", &self.inner.key)
            .field("contract", &self.inner.contract)
            .finish_non_exhaustive()
    }
}

/// The link configuration keys of a `plugin` provider instance.
pub const PLUGIN_CONFIG_KEYS: &[&str] = &["key", "contract", "timeout"];

impl RemoteProvider {
    /// The plugin with public key `key` (`V...`) serving `contract_id`, on `lattice`; calls
    /// wait at most `timeout` (and never past the actor's deadline).
    pub fn new(
        lattice: Lattice,
        key: &str,
        contract_id: &str,
        timeout: Duration,
    ) -> Result<Self, ProviderError> {
        if !key.starts_with('V') || KeyPair::from_public_key(key).is_err() {
            return Err(ProviderError::Config(format!(
                "{key:?} is not a provider (service) public key; they start with V"
            )));
        }
        let subjects = Subjects::new(&lattice.name, key);
        Ok(RemoteProvider {
            inner: Arc::new(Inner {
                lattice,
                key: key.to_string(),
                contract: intern(contract_id),
                timeout,
                subjects,
                state: Mutex::new(State::default()),
                identifying: tokio::sync::Mutex::new(()),
            }),
            hello: Mutex::new(None),
        })
    }

    /// A `plugin` instance from its configuration: `key` (required), `contract` (a contract
    /// ID, required), `timeout` (default 5s).
    pub fn from_config(
        lattice: Lattice,
        config: &crate::LinkConfig,
    ) -> Result<Self, ProviderError> {
        config.only(PLUGIN_CONFIG_KEYS)?;
        let key = config.require("key")?;
        let contract = sigil_claims::caps::parse_capability(config.require("contract")?)
            .map_err(|e| ProviderError::Config(format!("contract: {e}")))?;
        let timeout = config.duration("timeout", Duration::from_secs(5))?;
        Self::new(lattice, key, &contract, timeout)
    }

    /// The plugin's public key.
    pub fn key(&self) -> &str {
        &self.inner.key
    }

    /// The plugin's verified claims, once it proved who it is.
    pub fn claims(&self) -> Option<VerifiedProviderClaims> {
        lock(&self.inner.state)
            .verified
            .as_ref()
            .map(|v| v.claims.clone())
    }
}

impl Inner {
    fn unavailable(&self, message: impl std::fmt::Display) -> ProviderError {
        ProviderError::unavailable(
            self.contract,
            format!("provider plugin {}: {message}", self.key),
        )
    }

    /// Challenges the plugin to prove its key, and checks its claims.
    async fn identify(&self) -> Result<Arc<Verified>, ProviderError> {
        if let Some(v) = lock(&self.state).verified.clone() {
            return Ok(v);
        }
        // One challenge at a time; whoever waited finds the answer of the one before.
        let _one = self.identifying.lock().await;
        if let Some(v) = lock(&self.state).verified.clone() {
            return Ok(v);
        }
        let client = self.lattice.client().await?;
        let nonce = data_encoding::BASE64URL_NOPAD.encode(&rand_bytes());
        let request = serde_json::to_vec(&IdentifyRequest {
            nonce: nonce.clone(),
        })
        .map_err(|e| ProviderError::Failed(e.to_string()))?;
        let answer = client
            .send_request(
                self.subjects.identify(),
                async_nats::Request::new()
                    .payload(request.into())
                    .timeout(Some(self.timeout.min(Duration::from_secs(2)))),
            )
            .await
            .map_err(|e| self.unavailable(describe_request_error(&e, &self.subjects.identify())))?;
        let answer: IdentifyResponse = serde_json::from_slice(&answer.payload)
            .map_err(|e| self.unavailable(format!("malformed identity answer: {e}")))?;
        let refused = |why: String| {
            tracing::error!(plugin = %self.key, reason = %why, "provider plugin refused");
            ProviderError::Denied(format!("provider plugin {} refused: {why}", self.key))
        };
        if answer.version != WIRE_VERSION {
            return Err(refused(format!(
                "it speaks wire version {}, this host {WIRE_VERSION}",
                answer.version
            )));
        }
        let claims = sigil_claims::verify_provider_token(&answer.claims, &self.lattice.policy)
            .map_err(|e| refused(format!("its claims: {e}")))?;
        if claims.subject() != self.key {
            return Err(refused(format!(
                "its claims are for {}, not {}",
                claims.subject(),
                self.key
            )));
        }
        if claims.contract_id() != self.contract {
            return Err(refused(format!(
                "its claims are for {}, not {}",
                claims.contract_id(),
                self.contract
            )));
        }
        let key = KeyPair::from_public_key(&self.key).map_err(|e| refused(e.to_string()))?;
        let sig = data_encoding::BASE64URL_NOPAD
            .decode(answer.signature.as_bytes())
            .map_err(|_| refused("its challenge signature is not base64url".into()))?;
        key.verify(wire::identify_input(&nonce).as_bytes(), &sig)
            .map_err(|_| refused("it cannot sign with its key (an impostor)".into()))?;
        tracing::info!(
            plugin = %self.key,
            contract = self.contract,
            issuer = claims.issuer(),
            instance = %answer.instance,
            "provider plugin verified"
        );
        let verified = Arc::new(Verified {
            key,
            claims,
            instance: answer.instance,
        });
        lock(&self.state).verified = Some(verified.clone());
        Ok(verified)
    }

    fn forget(&self) {
        lock(&self.state).verified = None;
    }

    /// Sends one signed request and checks the signed answer.
    async fn request(
        &self,
        kind: RequestKind,
        subject: String,
        mut envelope: Envelope,
        body: Bytes,
        wait: Duration,
    ) -> Result<Result<Bytes, (ErrorKind, String)>, ProviderError> {
        let verified = self.identify().await?;
        envelope.lattice = self.lattice.name.clone();
        envelope.subject = subject.clone();
        let client = self.lattice.client().await?;
        let (token, jti) = wire::sign_envelope(&self.lattice.cluster, &self.key, envelope)
            .map_err(ProviderError::Failed)?;
        let mut headers = HeaderMap::new();
        headers.insert(HEADER_INVOCATION, token.as_str());
        let answer = client
            .send_request(
                subject.clone(),
                async_nats::Request::new()
                    .headers(headers)
                    .payload(body)
                    .timeout(Some(wait)),
            )
            .await;
        let answer = match answer {
            Ok(a) => a,
            Err(e) => {
                if e.kind() == RequestErrorKind::NoResponders {
                    // It stopped: prove it again when it is back.
                    self.forget();
                }
                if e.kind() == RequestErrorKind::TimedOut && kind == RequestKind::Invoke {
                    return Err(ProviderError::Timeout {
                        contract_id: self.contract.to_string(),
                        operation: format!("(through provider plugin {})", self.key),
                        elapsed: wait,
                    });
                }
                return Err(self.unavailable(describe_request_error(&e, &subject)));
            }
        };
        wire::open_answer(&answer, &jti, |_| Ok(&verified.key)).map_err(|e| {
            tracing::error!(plugin = %self.key, error = %e, "answer from the plugin refused");
            ProviderError::Failed(format!(
                "the answer from provider plugin {} was refused: {e}",
                self.key
            ))
        })
    }

    async fn send_link(&self, link: &Link, kind: RequestKind) -> Result<(), ProviderError> {
        let message = LinkMessage {
            actor: link.actor.as_ref().into(),
            contract: link.contract_id.clone(),
            link: link.link_name.clone(),
            provider: link.provider.clone(),
            config: if kind == RequestKind::LinkPut {
                link.config.0.clone()
            } else {
                Default::default()
            },
        };
        let body =
            serde_json::to_vec(&message).map_err(|e| ProviderError::Failed(e.to_string()))?;
        let wait = self.timeout;
        let envelope = Envelope {
            v: WIRE_VERSION,
            kind,
            actor: message.actor.clone(),
            contract: message.contract.clone(),
            link: message.link.clone(),
            operation: String::new(),
            hash: wire::body_hash(&body),
            deadline_ms: deadline_ms(Instant::now() + wait),
            depth: 0,
            lattice: String::new(),
            subject: String::new(),
            command: None,
        };
        let subject = match kind {
            RequestKind::LinkPut => self.subjects.link_put(),
            _ => self.subjects.link_del(),
        };
        match self
            .request(kind, subject, envelope, body.into(), wait)
            .await?
        {
            Ok(_) => Ok(()),
            Err((_, text)) => Err(ProviderError::Failed(format!(
                "provider plugin {}: {text}",
                self.key
            ))),
        }
    }

    /// Sends every link this host holds (after the plugin restarted).
    async fn send_links(&self) {
        let links: Vec<Link> = lock(&self.state).links.values().cloned().collect();
        for link in links {
            if let Err(e) = self.send_link(&link, RequestKind::LinkPut).await {
                tracing::warn!(plugin = %self.key, actor = %link.actor.name, error = %e, "cannot send a link to the plugin");
            }
        }
    }

    async fn invoke_once(
        &self,
        call: &Invocation<'_>,
    ) -> Result<Result<Bytes, (ErrorKind, String)>, ProviderError> {
        let now = Instant::now();
        let wait = call
            .deadline
            .saturating_duration_since(now)
            .min(self.timeout);
        if wait.is_zero() {
            return Err(ProviderError::Timeout {
                contract_id: self.contract.to_string(),
                operation: call.operation.to_string(),
                elapsed: Duration::ZERO,
            });
        }
        let envelope = Envelope {
            v: WIRE_VERSION,
            kind: RequestKind::Invoke,
            actor: call.actor.into(),
            contract: self.contract.to_string(),
            link: call.link_name.to_string(),
            operation: call.operation.to_string(),
            hash: wire::body_hash(call.payload),
            deadline_ms: deadline_ms(now + wait),
            depth: 0,
            lattice: String::new(),
            subject: String::new(),
            command: None,
        };
        self.request(
            RequestKind::Invoke,
            self.subjects.invoke(),
            envelope,
            Bytes::copy_from_slice(call.payload),
            wait,
        )
        .await
    }
}

#[async_trait]
impl Provider for RemoteProvider {
    fn contract_id(&self) -> &'static str {
        self.inner.contract
    }

    fn kind(&self) -> &'static str {
        "plugin"
    }

    async fn start(&self, _host: Arc<dyn ActorInvoker>) -> Result<(), ProviderError> {
        let client = self.inner.lattice.client().await?;
        let mut hellos = client
            .subscribe(wire::hello_subject(&self.inner.lattice.name))
            .await
            .map_err(|e| self.inner.unavailable(format!("cannot subscribe: {e}")))?;
        let inner = self.inner.clone();
        let task = tokio::spawn(async move {
            while let Some(m) = hellos.next().await {
                let Ok(hello) = serde_json::from_slice::<Hello>(&m.payload) else {
                    continue;
                };
                if hello.key != inner.key {
                    continue;
                }
                let known = lock(&inner.state)
                    .verified
                    .as_ref()
                    .map(|v| v.instance.clone());
                if known.as_deref() == Some(hello.instance.as_str()) {
                    continue;
                }
                tracing::info!(plugin = %inner.key, instance = %hello.instance, "provider plugin (re)started");
                inner.forget();
                if inner.identify().await.is_ok() {
                    inner.send_links().await;
                }
            }
        });
        *lock(&self.hello) = Some(task);
        if let Err(e) = self.inner.identify().await {
            // Not fatal: the plugin may start after the host; calls fail clearly until then.
            tracing::warn!(plugin = %self.inner.key, error = %e, "provider plugin not verified yet");
        }
        Ok(())
    }

    async fn link_added(&self, link: &Link) -> Result<(), ProviderError> {
        let reachable = self.inner.identify().await.is_ok();
        if reachable {
            self.inner.send_link(link, RequestKind::LinkPut).await?;
        } else {
            tracing::warn!(plugin = %self.inner.key, actor = %link.actor.name, "link kept; it is sent when the plugin starts");
        }
        lock(&self.inner.state)
            .links
            .insert(link.key(), link.clone());
        Ok(())
    }

    async fn link_removed(&self, link: &Link) {
        lock(&self.inner.state).links.remove(&link.key());
        if let Err(e) = self.inner.send_link(link, RequestKind::LinkDel).await {
            tracing::debug!(plugin = %self.inner.key, error = %e, "cannot tell the plugin a link was removed");
        }
    }

    async fn invoke(&self, call: Invocation<'_>) -> Result<Vec<u8>, ProviderError> {
        let mut answer = self.inner.invoke_once(&call).await?;
        if let Err((ErrorKind::UnknownLink, _)) = &answer {
            // The plugin restarted and lost its links: send this one, then try again.
            let link = lock(&self.inner.state)
                .links
                .get(&LinkKey {
                    actor: call.actor.subject.clone(),
                    link_name: call.link_name.to_string(),
                })
                .cloned();
            if let Some(link) = link {
                self.inner.send_link(&link, RequestKind::LinkPut).await?;
                answer = self.inner.invoke_once(&call).await?;
            }
        }
        match answer {
            Ok(bytes) => Ok(bytes.into()),
            Err((ErrorKind::Refused, text)) => Err(ProviderError::Denied(format!(
                "provider plugin {} refused the invocation: {text}",
                self.inner.key
            ))),
            Err((_, text)) => Err(ProviderError::Failed(text)),
        }
    }

    async fn health(&self) -> Health {
        if let Err(e) = self.inner.identify().await {
            return Health::Unhealthy(e.to_string());
        }
        let Ok(client) = self.inner.lattice.client().await else {
            return Health::Unhealthy("the lattice's NATS is unreachable".into());
        };
        let answer = client
            .send_request(
                self.inner.subjects.health(),
                async_nats::Request::new()
                    .payload(Bytes::new())
                    .timeout(Some(Duration::from_secs(1))),
            )
            .await;
        match answer.map(|m| serde_json::from_slice::<HealthResponse>(&m.payload)) {
            Ok(Ok(h)) if h.healthy => Health::Healthy,
            Ok(Ok(h)) => Health::Unhealthy(h.message.unwrap_or_default()),
            Ok(Err(e)) => Health::Unhealthy(format!("malformed health answer: {e}")),
            Err(e) => {
                if e.kind() == RequestErrorKind::NoResponders {
                    self.inner.forget();
                }
                Health::Unhealthy(describe_request_error(&e, &self.inner.subjects.health()))
            }
        }
    }

    async fn stop(&self) {
        if let Some(task) = lock(&self.hello).take() {
            task.abort();
        }
    }
}

fn describe_request_error(e: &async_nats::RequestError, subject: &str) -> String {
    match e.kind() {
        RequestErrorKind::NoResponders => {
            format!("it is not running (no one answers on {subject})")
        }
        RequestErrorKind::TimedOut => format!("it did not answer on {subject} in time"),
        RequestErrorKind::MaxPayloadExceeded => {
            format!("the request is larger than the NATS server accepts: {e}")
        }
        _ => format!("request on {subject} failed: {e}"),
    }
}

fn deadline_ms(at: Instant) -> u64 {
    let left = at.saturating_duration_since(Instant::now());
    wire::now_ms().saturating_add(u64::try_from(left.as_millis()).unwrap_or(u64::MAX))
}

fn rand_bytes() -> [u8; 32] {
    rand::random()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::LinkConfig;

    fn lattice() -> Lattice {
        Lattice::new(
            "nats://127.0.0.1:1",
            "t",
            KeyPair::new_cluster(),
            Policy::new(),
        )
    }

    #[test]
    fn a_plugin_instance_names_a_service_key_and_a_contract() {
        let key = KeyPair::new_service().public_key();
        let ok = LinkConfig::new()
            .with("key", &key)
            .with("contract", "keyvalue");
        let p = RemoteProvider::from_config(lattice(), &ok).unwrap();
        assert_eq!(p.contract_id(), "wasmcloud:keyvalue");
        assert_eq!(p.key(), key);

        let account = KeyPair::new_account().public_key();
        let e = RemoteProvider::from_config(
            lattice(),
            &LinkConfig::new()
                .with("key", &account)
                .with("contract", "keyvalue"),
        )
        .unwrap_err();
        assert!(e.to_string().contains("start with V"), "{e}");
        let e = RemoteProvider::from_config(lattice(), &LinkConfig::new().with("key", &key))
            .unwrap_err();
        assert!(e.to_string().contains("contract"), "{e}");
        let e =
            RemoteProvider::from_config(lattice(), &ok.clone().with("timout", "1s")).unwrap_err();
        assert!(e.to_string().contains("timout"), "{e}");
    }
}
