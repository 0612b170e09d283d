//! The plugin side: serve any [`Provider`] as a separate process on the lattice.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use nkeys::KeyPair;
use sigil_claims::ProviderMetadata;

use super::wire::{
    self, EnvelopeVerifier, ErrorKind, HealthResponse, Hello, IdentifyRequest, IdentifyResponse,
    LinkMessage, QUEUE_GROUP, RequestKind, Subjects, WIRE_VERSION,
};
use crate::{ActorIdentity, ActorInvoker, Invocation, Provider};

/// How a plugin process joins the lattice and proves who it is.
pub struct PluginConfig {
    /// The NATS server (`nats://127.0.0.1:4222`).
    pub nats: String,
    /// The lattice name (`default`): subjects start with `sigil.<lattice>.`.
    pub lattice: String,
    /// The plugin's own key pair, with its seed (`SV...`): its identity.
    pub key: KeyPair,
    /// Its provider claims: a token for `key`, signed by an issuer account.
    pub claims: String,
    /// Cluster public keys (`C...`) of the hosts it serves.
    pub cluster_issuers: Vec<String>,
}

impl std::fmt::Debug for PluginConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginConfig")
            .field("nats", &self.nats)
            .field("lattice", &self.lattice)
            .field("key", &self.key.public_key())
            .field("cluster_issuers", &self.cluster_issuers)
            .finish_non_exhaustive()
    }
}

impl PluginConfig {
    /// Reads the configuration from the environment:
    /// - `SIGIL_NATS_URL` (default `nats://127.0.0.1:4222`),
    /// - `SIGIL_LATTICE` (default `default`),
    /// - `SIGIL_PROVIDER_SEED` or `SIGIL_PROVIDER_SEED_FILE`: the plugin's seed,
    /// - `SIGIL_PROVIDER_CLAIMS`: its claims token, or the path of a file holding it,
    /// - `SIGIL_CLUSTER_ISSUERS`: comma-separated host cluster keys it trusts.
    pub fn from_env() -> Result<Self, String> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let seed = match (var("SIGIL_PROVIDER_SEED"), var("SIGIL_PROVIDER_SEED_FILE")) {
            (Some(seed), _) => seed,
            (None, Some(path)) => std::fs::read_to_string(&path)
                .map_err(|e| format!("cannot read SIGIL_PROVIDER_SEED_FILE {path}: {e}"))?,
            (None, None) => {
                return Err(
                    "set SIGIL_PROVIDER_SEED (or SIGIL_PROVIDER_SEED_FILE) to the plugin's \
                     service seed (SV...)"
                        .into(),
                );
            }
        };
        let key = KeyPair::from_seed(seed.trim())
            .map_err(|e| format!("the provider seed is not valid: {e}"))?;
        let claims = var("SIGIL_PROVIDER_CLAIMS").ok_or(
            "set SIGIL_PROVIDER_CLAIMS to the plugin's provider claims (a token, or a file \
             holding it)",
        )?;
        let claims = if claims.trim_start().starts_with("ey") {
            claims
        } else {
            std::fs::read_to_string(claims.trim())
                .map_err(|e| format!("cannot read SIGIL_PROVIDER_CLAIMS {claims}: {e}"))?
        };
        let cluster_issuers = var("SIGIL_CLUSTER_ISSUERS")
            .ok_or("set SIGIL_CLUSTER_ISSUERS to the cluster keys (C...) of the hosts to serve")?
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();
        Ok(PluginConfig {
            nats: var("SIGIL_NATS_URL").unwrap_or_else(|| "nats://127.0.0.1:4222".into()),
            lattice: var("SIGIL_LATTICE").unwrap_or_else(|| "default".into()),
            key,
            claims: claims.trim().to_string(),
            cluster_issuers,
        })
    }
}

/// Deliveries to actors from a plugin (an HTTP request, a subscribed message): not carried
/// over the lattice yet, so a plugin of such a provider refuses them with this message.
struct NoLatticeActors;

#[async_trait]
impl ActorInvoker for NoLatticeActors {
    async fn invoke_actor(
        &self,
        actor: &str,
        operation: &str,
        _: Vec<u8>,
    ) -> Result<Vec<u8>, String> {
        Err(format!(
            "cannot deliver {operation} to actor {actor}: a provider plugin cannot call actors \
             over the lattice yet; run this provider built into the host"
        ))
    }
}

/// The links a plugin holds: what the hosts sent, by actor and link name.
type Links = Mutex<HashMap<(String, String), LinkMessage>>;

struct Served {
    provider: Arc<dyn Provider>,
    client: async_nats::Client,
    key: KeyPair,
    claims: String,
    instance: String,
    verifier: EnvelopeVerifier,
    links: Links,
}

/// Serves `provider` on the lattice until the process is asked to stop (Ctrl-C or
/// SIGTERM), or the NATS connection closes for good.
///
/// The plugin checks its own claims first (they must name its key and the provider's
/// contract), joins the lattice, announces itself so hosts send it their links, and then
/// answers identity challenges, links and invocations. Every request must carry an
/// envelope signed by a trusted host cluster key, for this plugin, unaltered, unexpired
/// and never seen before; every answer is signed with the plugin's key.
pub async fn serve(provider: Arc<dyn Provider>, config: PluginConfig) -> Result<(), String> {
    let stop = shutdown_signal();
    serve_until(provider, config, stop).await
}

/// [`serve`], until `stop` completes.
pub async fn serve_until(
    provider: Arc<dyn Provider>,
    config: PluginConfig,
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), String> {
    let me = config.key.public_key();
    let claims = sigil_claims::jwt::decode_unverified::<ProviderMetadata>(&config.claims)
        .map_err(|e| format!("the provider claims cannot be read: {e}"))?;
    if claims.subject != me {
        return Err(format!(
            "the provider claims are for {}, but this plugin's key is {me}",
            claims.subject
        ));
    }
    let capid = claims.metadata.map(|m| m.capid).unwrap_or_default();
    if capid != provider.contract_id() {
        return Err(format!(
            "the provider claims name the contract {capid:?}, but the provider serves {}",
            provider.contract_id()
        ));
    }
    let verifier = EnvelopeVerifier::new(&me, &config.lattice, &config.cluster_issuers)?;
    let client = async_nats::connect(&config.nats)
        .await
        .map_err(|e| format!("cannot connect to NATS at {}: {e}", config.nats))?;
    provider
        .start(Arc::new(NoLatticeActors))
        .await
        .map_err(|e| format!("the provider did not start: {e}"))?;
    let subjects = Subjects::new(&config.lattice, &me);
    let subscribe = |subject| wire::subscribe(&client, subject, None);
    let queue = |subject| wire::subscribe(&client, subject, Some(QUEUE_GROUP));
    let mut identify = subscribe(subjects.identify()).await?;
    let mut link_put = subscribe(subjects.link_put()).await?;
    let mut link_del = subscribe(subjects.link_del()).await?;
    let mut invoke = queue(subjects.invoke()).await?;
    let mut health = queue(subjects.health()).await?;
    let served = Arc::new(Served {
        provider: provider.clone(),
        client: client.clone(),
        key: config.key,
        claims: config.claims,
        instance: uuid::Uuid::new_v4().simple().to_string(),
        verifier,
        links: Mutex::new(HashMap::new()),
    });
    let hello = Hello {
        key: me.clone(),
        instance: served.instance.clone(),
    };
    let hello = serde_json::to_vec(&hello).map_err(|e| e.to_string())?;
    client
        .publish(wire::hello_subject(&config.lattice), hello.into())
        .await
        .map_err(|e| format!("cannot announce the plugin: {e}"))?;
    client
        .flush()
        .await
        .map_err(|e| format!("cannot announce the plugin: {e}"))?;
    tracing::info!(key = %me, contract = provider.contract_id(), lattice = %config.lattice, "provider plugin serving");
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => break,
            Some(m) = identify.next() => served.identify(m).await,
            // Links in the order they come, so a removal never overtakes its addition.
            Some(m) = link_put.next() => served.link(m, RequestKind::LinkPut).await,
            Some(m) = link_del.next() => served.link(m, RequestKind::LinkDel).await,
            Some(m) = invoke.next() => {
                let served = served.clone();
                tokio::spawn(async move { served.invoke(m).await });
            }
            Some(m) = health.next() => served.health(m).await,
            else => break,
        }
    }
    tracing::info!(key = %me, "provider plugin stopping");
    provider.quiesce().await;
    provider.stop().await;
    let _ = client.drain().await;
    Ok(())
}

/// Completes on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

impl Served {
    async fn reply(&self, message: &async_nats::Message, headers: HeaderMap, body: Bytes) {
        if let Some(reply) = &message.reply
            && let Err(e) = self
                .client
                .publish_with_headers(reply.clone(), headers, body)
                .await
        {
            tracing::warn!(error = %e, "cannot answer a host");
        }
    }

    /// Answers with a signed error of `kind`.
    async fn refuse(&self, message: &async_nats::Message, jti: &str, kind: ErrorKind, text: &str) {
        let body = Bytes::copy_from_slice(text.as_bytes());
        let headers = wire::answer_headers(&self.key, jti, &body, Some(kind), false);
        self.reply(message, headers, body).await;
    }

    async fn answer(&self, message: &async_nats::Message, jti: &str, body: Bytes) {
        let headers = wire::answer_headers(&self.key, jti, &body, None, false);
        self.reply(message, headers, body).await;
    }

    async fn identify(&self, message: async_nats::Message) {
        let Ok(request) = serde_json::from_slice::<IdentifyRequest>(&message.payload) else {
            self.refuse(
                &message,
                "",
                ErrorKind::Refused,
                "malformed identity challenge",
            )
            .await;
            return;
        };
        let signature = match self
            .key
            .sign(wire::identify_input(&request.nonce).as_bytes())
        {
            Ok(s) => data_encoding::BASE64URL_NOPAD.encode(&s),
            Err(e) => {
                tracing::error!(error = %e, "cannot sign an identity challenge");
                return;
            }
        };
        let answer = IdentifyResponse {
            version: WIRE_VERSION,
            claims: self.claims.clone(),
            signature,
            instance: self.instance.clone(),
        };
        if let Ok(body) = serde_json::to_vec(&answer) {
            self.reply(&message, HeaderMap::new(), body.into()).await;
        }
    }

    async fn link(&self, message: async_nats::Message, kind: RequestKind) {
        let claims = match self.verifier.verify(kind, &message) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "link request refused");
                let jti = wire::refusal_jti(&message);
                self.refuse(&message, &jti, ErrorKind::Refused, &e).await;
                return;
            }
        };
        let jti = claims.jti.clone();
        let link: LinkMessage = match serde_json::from_slice(&message.payload) {
            Ok(l) => l,
            Err(e) => {
                let text = format!("malformed link: {e}");
                self.refuse(&message, &jti, ErrorKind::Failed, &text).await;
                return;
            }
        };
        let env = &claims.sigil;
        if link.actor != env.actor || link.contract != env.contract || link.link != env.link {
            let text = "the link does not match its envelope";
            self.refuse(&message, &jti, ErrorKind::Refused, text).await;
            return;
        }
        if link.contract != self.provider.contract_id() {
            let text = format!(
                "this plugin serves {}, not {}",
                self.provider.contract_id(),
                link.contract
            );
            self.refuse(&message, &jti, ErrorKind::Failed, &text).await;
            return;
        }
        let key = (link.actor.subject.clone(), link.link.clone());
        let previous = lock(&self.links).get(&key).cloned();
        let result = match kind {
            RequestKind::LinkPut => {
                if previous.as_ref() == Some(&link) {
                    // Sent again (another host, or after a hello): nothing changes.
                    Ok(())
                } else {
                    if let Some(old) = &previous {
                        self.provider.link_removed(&old.to_link()).await;
                    }
                    let added = self.provider.link_added(&link.to_link()).await;
                    let mut links = lock(&self.links);
                    match &added {
                        Ok(()) => {
                            links.insert(key, link);
                        }
                        Err(_) => {
                            links.remove(&key);
                        }
                    }
                    added.map_err(|e| e.to_string())
                }
            }
            _ => {
                if let Some(old) = previous {
                    self.provider.link_removed(&old.to_link()).await;
                    lock(&self.links).remove(&key);
                }
                Ok(())
            }
        };
        match result {
            Ok(()) => self.answer(&message, &jti, Bytes::new()).await,
            Err(text) => {
                self.refuse(&message, &jti, ErrorKind::Failed, &text).await;
            }
        }
    }

    async fn invoke(&self, message: async_nats::Message) {
        let claims = match self.verifier.verify(RequestKind::Invoke, &message) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "invocation refused");
                let jti = wire::refusal_jti(&message);
                self.refuse(&message, &jti, ErrorKind::Refused, &e).await;
                return;
            }
        };
        let env = claims.sigil;
        let known = lock(&self.links).contains_key(&(env.actor.subject.clone(), env.link.clone()));
        if !known {
            let text = format!(
                "no link `{}` for actor {} on this plugin",
                env.link, env.actor.subject
            );
            self.refuse(&message, &claims.jti, ErrorKind::UnknownLink, &text)
                .await;
            return;
        }
        let actor: ActorIdentity = env.actor.into();
        let left = env.deadline_ms.saturating_sub(wire::now_ms());
        let deadline = Instant::now() + Duration::from_millis(left);
        let call = Invocation {
            actor: &actor,
            link_name: &env.link,
            operation: &env.operation,
            payload: &message.payload,
            deadline,
        };
        match self.provider.invoke(call).await {
            Ok(response) => self.answer(&message, &claims.jti, response.into()).await,
            Err(e) => {
                self.refuse(&message, &claims.jti, ErrorKind::Failed, &e.to_string())
                    .await;
            }
        }
    }

    async fn health(&self, message: async_nats::Message) {
        let health = self.provider.health().await;
        let answer = HealthResponse {
            healthy: health.is_healthy(),
            message: match health {
                crate::Health::Healthy => None,
                crate::Health::Unhealthy(m) => Some(m),
            },
        };
        if let Ok(body) = serde_json::to_vec(&answer) {
            self.reply(&message, HeaderMap::new(), body.into()).await;
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
