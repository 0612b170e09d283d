//! The control interface: an operator steers the hosts of a lattice over NATS
//! request/reply, and watches their heartbeats and events.
//!
//! Subjects (lattice `L`, host ID `N...`, a key generated per host process):
//! - `sigil.L.ctl.hosts`: every host answers with its [`HostInfo`] (scatter-gather);
//! - `sigil.L.ctl.host.<id>`: a command to one host ([`Command`]);
//! - `sigil.L.evt.<id>.<kind>`: the host's [`HostEvent`]s, a heartbeat among them.
//!
//! Every request carries an envelope signed by a trusted cluster key, as calls to
//! provider plugins and actors do (`docs/provider-plugins.md`): whoever holds the
//! lattice's cluster seed may steer it, no one else. The envelope holds everything a host
//! acts on: the command with its arguments, the addressee, the lattice and the subject,
//! and the hash of the body. Every answer is signed by the answering host's cluster key.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::HeaderMap;
use futures::StreamExt;
use nkeys::KeyPair;
use serde::{Deserialize, Serialize};
use sigil_providers::plugin::Lattice;
use sigil_providers::plugin::wire::{
    self, Envelope, EnvelopeVerifier, ErrorKind, HEADER_INVOCATION, RequestKind, WIRE_VERSION,
    WireActor,
};
use sigil_providers::{LinkConfig, LinkDefinition};
use tokio::task::JoinHandle;

use super::runtime::Runtime;
use crate::oci::ModuleRef;

/// Where every host answers with its inventory.
pub fn hosts_subject(lattice: &str) -> String {
    format!("sigil.{lattice}.ctl.hosts")
}

/// Where one host takes commands.
pub fn host_subject(lattice: &str, host: &str) -> String {
    format!("sigil.{lattice}.ctl.host.{host}")
}

/// Where a host publishes its events (`>` for all of them, on every host).
pub fn events_subject(lattice: &str, host: &str, kind: &str) -> String {
    format!("sigil.{lattice}.evt.{host}.{kind}")
}

/// What a host reports about itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HostInfo {
    /// Its ID for this process (a server key, `N...`).
    pub id: String,
    /// Its configured name.
    pub name: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// The Sigil version.
    pub version: String,
    /// How long it has run, in milliseconds.
    pub uptime_ms: u64,
    /// Invocations running now.
    pub in_flight: usize,
    /// Whether it is shutting down.
    pub draining: bool,
    /// Its actors.
    pub actors: Vec<ActorInfo>,
    /// Its provider instances.
    pub providers: Vec<ProviderInfo>,
    /// Its links.
    pub links: Vec<LinkInfo>,
}

/// One running actor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ActorInfo {
    /// Its public key.
    pub subject: String,
    /// Its name.
    pub name: String,
    /// Its signed revision.
    pub rev: Option<i32>,
    /// Its signed version.
    pub ver: Option<String>,
    /// Its call alias.
    pub call_alias: Option<String>,
    /// The limit on its invocations at once, if scaled.
    pub max_concurrent: Option<usize>,
    /// Where its module came from: a file, or the `oci://` reference pinned to the digest
    /// that runs (none for a module sent in a control request).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module: Option<String>,
    /// The account that signed it (`A...`), as verified.
    #[serde(default)]
    pub issuer: String,
    /// The capability contracts its claims grant.
    #[serde(default)]
    pub caps: Vec<String>,
    /// Its signed tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// When its claims were issued (Unix seconds).
    #[serde(default)]
    pub issued_at: u64,
    /// When its claims expire (Unix seconds), if they do.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<u64>,
    /// When its claims become valid (Unix seconds), if set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before: Option<u64>,
    /// The signed SHA-256 of its module.
    #[serde(default)]
    pub module_hash: String,
    /// `actor` (waPC) or `wasi` (a WASI command module).
    #[serde(default)]
    pub kind: String,
}

/// One provider instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ProviderInfo {
    /// Its instance name.
    pub name: String,
    /// Its kind.
    pub kind: String,
    /// Its contract.
    pub contract: String,
    /// Whether it serves now.
    pub healthy: bool,
    /// How many links it serves.
    pub links: usize,
}

/// One link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LinkInfo {
    /// The actor's public key.
    pub actor: String,
    /// The contract.
    pub contract: String,
    /// The link name.
    pub name: String,
    /// The provider instance.
    pub provider: String,
}

/// A command to one host, carried in the signed envelope (`sigil.command`). A module
/// travels either as an `oci://` reference in the command, which the host pulls (so its
/// size is not bounded by NATS), or as the request body, whose hash the envelope holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "kebab-case")]
pub enum Command {
    /// Starts the signed module the reference names, or else the one in the body.
    StartActor {
        /// An `oci://` reference (best pinned to a digest) for the host to pull.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reference: Option<String>,
    },
    /// Replaces a running actor with the newer signed revision the reference names (or
    /// in the body), without dropping invocations; a revision not newer than the running
    /// one is refused.
    UpdateActor {
        /// An `oci://` reference for the host to pull.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reference: Option<String>,
    },
    /// Stops an actor (its links go too; running invocations finish).
    StopActor {
        /// Its public key, call alias or name.
        actor: String,
    },
    /// Limits an actor's invocations at once on the host (0: no limit of its own).
    ScaleActor {
        /// Its public key, call alias or name.
        actor: String,
        /// The limit.
        max_concurrent: usize,
    },
    /// Adds a link.
    PutLink {
        /// The link.
        link: LinkDefinition,
    },
    /// Removes a link.
    DelLink {
        /// The actor (public key or name).
        actor: String,
        /// The contract ID.
        contract: String,
        /// The link name.
        #[serde(default = "default_link")]
        name: String,
    },
}

fn default_link() -> String {
    sigil_providers::DEFAULT_LINK_NAME.to_string()
}

impl Command {
    /// Its name on the wire (`start-actor`, `scale-actor`, ...).
    pub fn name(&self) -> &'static str {
        match self {
            Command::StartActor { .. } => "start-actor",
            Command::UpdateActor { .. } => "update-actor",
            Command::StopActor { .. } => "stop-actor",
            Command::ScaleActor { .. } => "scale-actor",
            Command::PutLink { .. } => "put-link",
            Command::DelLink { .. } => "del-link",
        }
    }
}

/// Something that happened on a host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HostEvent {
    /// The host's ID.
    pub host: String,
    /// The host's name.
    pub host_name: String,
    /// What happened: `host_started`, `heartbeat`, `actor_started`, `actor_updated`,
    /// `actor_stopped`, `actor_scaled`, `link_added`, `link_removed`, `host_stopped`.
    pub kind: String,
    /// When (Unix milliseconds).
    pub at_ms: u64,
    /// What it concerns.
    pub detail: serde_json::Value,
}

/// What `runtime` reports about itself as host `id` (its inventory on the lattice).
pub async fn inventory(
    runtime: &Runtime,
    id: &str,
    name: &str,
    labels: &BTreeMap<String, String>,
) -> HostInfo {
    let status = runtime.status().await;
    let actors = runtime
        .host()
        .actors()
        .iter()
        .map(|a| actor_info(runtime, a))
        .collect();
    HostInfo {
        id: id.to_string(),
        name: name.to_string(),
        labels: labels.clone(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        uptime_ms: u64::try_from(status.uptime.as_millis()).unwrap_or(u64::MAX),
        in_flight: status.in_flight,
        draining: status.draining,
        actors,
        providers: status
            .providers
            .iter()
            .map(|p| ProviderInfo {
                name: p.name.clone(),
                kind: p.kind.to_string(),
                contract: p.contract_id.to_string(),
                healthy: p.health.is_healthy(),
                links: p.links,
            })
            .collect(),
        links: runtime
            .registry()
            .links()
            .iter()
            .map(|l| LinkInfo {
                actor: l.actor.subject.clone(),
                contract: l.contract_id.clone(),
                name: l.link_name.clone(),
                provider: l.provider.clone(),
            })
            .collect(),
    }
}

/// One running actor as reported: its verified claims, scale and module.
pub fn actor_info(runtime: &Runtime, actor: &crate::Actor) -> ActorInfo {
    let claims = actor.claims();
    ActorInfo {
        subject: actor.subject().to_string(),
        name: actor.name().to_string(),
        rev: claims.rev(),
        ver: claims.ver().map(str::to_string),
        call_alias: claims.call_alias().map(str::to_string),
        max_concurrent: runtime.actor_scale(actor.subject()),
        module: runtime.actor_origin(actor.subject()),
        issuer: claims.issuer().to_string(),
        caps: claims.capabilities().to_vec(),
        tags: claims.tags().to_vec(),
        issued_at: claims.issued_at(),
        expires: claims.expires(),
        not_before: claims.not_before(),
        module_hash: claims.module_hash().to_string(),
        kind: if actor.is_wasi() { "wasi" } else { "actor" }.to_string(),
    }
}

/// A host serving the control interface.
pub struct ControlServer {
    inner: Arc<Inner>,
    tasks: Vec<JoinHandle<()>>,
}

struct Inner {
    runtime: Arc<Runtime>,
    lattice: Lattice,
    client: async_nats::Client,
    verifier: EnvelopeVerifier,
    id: String,
    name: String,
    labels: BTreeMap<String, String>,
}

impl std::fmt::Debug for ControlServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlServer")
            .field("id", &self.inner.id)
            .finish_non_exhaustive()
    }
}

impl ControlServer {
    /// Serves the control interface of `runtime` on `lattice`, trusting its cluster key
    /// and `trusted`; publishes a heartbeat every `heartbeat`.
    pub async fn start(
        runtime: Arc<Runtime>,
        lattice: Lattice,
        trusted: &[String],
        name: &str,
        labels: BTreeMap<String, String>,
        heartbeat: Duration,
    ) -> Result<Self, String> {
        let client = lattice.client().await.map_err(|e| e.to_string())?;
        let mut keys = vec![lattice.cluster.public_key()];
        keys.extend(trusted.iter().cloned());
        let inner = Arc::new(Inner {
            runtime,
            client: client.clone(),
            verifier: EnvelopeVerifier::new("", &lattice.name, &keys)?,
            id: KeyPair::new_server().public_key(),
            name: name.to_string(),
            labels,
            lattice,
        });
        let subscribe = |subject| wire::subscribe(&client, subject, None);
        let mut hosts = subscribe(hosts_subject(&inner.lattice.name)).await?;
        let mut commands = subscribe(host_subject(&inner.lattice.name, &inner.id)).await?;
        let mut tasks = Vec::new();
        let me = inner.clone();
        tasks.push(tokio::spawn(async move {
            while let Some(m) = hosts.next().await {
                let me = me.clone();
                tokio::spawn(async move { me.inventory(m).await });
            }
        }));
        let me = inner.clone();
        tasks.push(tokio::spawn(async move {
            // One command at a time, in order.
            while let Some(m) = commands.next().await {
                me.command(m).await;
            }
        }));
        let me = inner.clone();
        tasks.push(tokio::spawn(async move {
            let mut ticks = tokio::time::interval(heartbeat.max(Duration::from_millis(100)));
            loop {
                ticks.tick().await;
                let info = me.info().await;
                let detail = serde_json::json!({
                    "uptime_ms": info.uptime_ms,
                    "in_flight": info.in_flight,
                    "actors": info.actors.len(),
                    "providers": info.providers.len(),
                    "links": info.links.len(),
                    "labels": info.labels,
                });
                me.event("heartbeat", detail).await;
            }
        }));
        inner
            .event(
                "host_started",
                serde_json::json!({ "labels": inner.labels }),
            )
            .await;
        // Once the server has the subscriptions, requests from other connections find them.
        wire::settle(&client).await?;
        tracing::info!(host = %inner.id, lattice = %inner.lattice.name, "control interface serving");
        Ok(ControlServer { inner, tasks })
    }

    /// This host's ID on the lattice.
    pub fn id(&self) -> &str {
        &self.inner.id
    }

    /// Stops serving; announces `host_stopped`.
    pub async fn stop(self) {
        for t in &self.tasks {
            t.abort();
        }
        self.inner
            .event("host_stopped", serde_json::json!({}))
            .await;
        let _ = self.inner.client.flush().await;
    }
}

impl Inner {
    async fn info(&self) -> HostInfo {
        inventory(&self.runtime, &self.id, &self.name, &self.labels).await
    }

    async fn event(&self, kind: &str, detail: serde_json::Value) {
        let event = HostEvent {
            host: self.id.clone(),
            host_name: self.name.clone(),
            kind: kind.to_string(),
            at_ms: wire::now_ms(),
            detail,
        };
        if let Ok(body) = serde_json::to_vec(&event) {
            let subject = events_subject(&self.lattice.name, &self.id, kind);
            if let Err(e) = self.client.publish(subject, body.into()).await {
                tracing::debug!(error = %e, "cannot publish a host event");
            }
        }
    }

    fn check(
        &self,
        to: &str,
        message: &async_nats::Message,
    ) -> Result<wire::EnvelopeClaims, String> {
        self.verifier
            .verify_message(to, RequestKind::Control, message)
    }

    async fn answer(
        &self,
        message: &async_nats::Message,
        jti: &str,
        result: Result<Vec<u8>, (ErrorKind, String)>,
    ) {
        let Some(reply) = message.reply.clone() else {
            return;
        };
        let (body, error) = match result {
            Ok(b) => (b, None),
            Err((kind, text)) => (text.into_bytes(), Some(kind)),
        };
        let headers = wire::answer_headers(&self.lattice.cluster, jti, &body, error, true);
        if let Err(e) = self
            .client
            .publish_with_headers(reply, headers, body.into())
            .await
        {
            tracing::warn!(error = %e, "cannot answer a control request");
        }
    }

    async fn inventory(&self, message: async_nats::Message) {
        match self.check("hosts", &message) {
            Err(e) => {
                tracing::warn!(error = %e, "control request refused");
                let jti = wire::refusal_jti(&message);
                self.answer(&message, &jti, Err((ErrorKind::Refused, e)))
                    .await;
            }
            Ok(claims) => {
                let info = self.info().await;
                let body = serde_json::to_vec(&info).unwrap_or_default();
                self.answer(&message, &claims.jti, Ok(body)).await;
            }
        }
    }

    async fn command(&self, message: async_nats::Message) {
        let claims = match self.check(&self.id, &message) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "control request refused");
                let jti = wire::refusal_jti(&message);
                self.answer(&message, &jti, Err((ErrorKind::Refused, e)))
                    .await;
                return;
            }
        };
        // The command comes from the signed envelope only: nothing outside the signature
        // decides what the host does.
        let command = claims
            .sigil
            .command
            .clone()
            .ok_or_else(|| "the envelope names no command (sigil.command)".to_string())
            .and_then(|v| {
                serde_json::from_value::<Command>(v)
                    .map_err(|e| format!("malformed command in the envelope: {e}"))
            });
        let result = match command {
            Err(e) => Err(e),
            Ok(c) if c.name() != claims.sigil.operation => Err(format!(
                "the command {} does not match its envelope's {}",
                c.name(),
                claims.sigil.operation
            )),
            Ok(c) => {
                tracing::info!(host = %self.id, command = c.name(), "control command");
                self.run(c, message.payload.to_vec()).await
            }
        };
        let result = result
            .map(|v| serde_json::to_vec(&v).unwrap_or_default())
            .map_err(|e| (ErrorKind::Failed, e));
        self.answer(&message, &claims.jti, result).await;
    }

    async fn run(&self, command: Command, body: Vec<u8>) -> Result<serde_json::Value, String> {
        let rt = &self.runtime;
        let describe = |a: &crate::Actor| {
            let mut d = serde_json::json!({
                "subject": a.subject(),
                "name": a.name(),
                "rev": a.claims().rev(),
            });
            if let Some(module) = rt.actor_origin(a.subject()) {
                d["module"] = module.into();
            }
            d
        };
        // A reference is pulled here, with this host's registry settings; its bytes then
        // go where a body's would.
        let fetch = async |reference: Option<String>, body: Vec<u8>| match reference {
            None => Ok((Arc::<[u8]>::from(body), None)),
            Some(r) => {
                if !body.is_empty() {
                    return Err("the command names a reference and carries a module too; \
                                send one"
                        .to_string());
                }
                let r = ModuleRef::parse(&r).map_err(|e| e.to_string())?;
                let registry = rt
                    .module_registry()
                    .ok_or_else(|| format!("{r}: this host pulls no modules from registries"))?;
                let pulled = registry.pull(&r).await.map_err(|e| e.to_string())?;
                Ok((pulled.module, Some(pulled.pinned.to_string())))
            }
        };
        match command {
            Command::StartActor { reference } => {
                let (bytes, origin) = fetch(reference, body).await?;
                let subject = sigil_claims::inspect(&bytes, &sigil_claims::Policy::new())
                    .ok()
                    .map(|i| i.claims.subject);
                if let Some(running) = subject.and_then(|s| rt.host().actor(&s)) {
                    return Err(format!(
                        "actor {} ({}) runs on this host already; update it instead",
                        running.name(),
                        running.subject()
                    ));
                }
                let actor = rt.load_actor(bytes).await.map_err(|e| e.to_string())?;
                if let Some(origin) = origin {
                    rt.set_origin(actor.subject(), origin);
                }
                let detail = describe(&actor);
                self.event("actor_started", detail.clone()).await;
                Ok(detail)
            }
            Command::UpdateActor { reference } => {
                let (bytes, origin) = fetch(reference, body).await?;
                let actor = rt.update_actor(bytes).await.map_err(|e| e.to_string())?;
                match origin {
                    Some(origin) => rt.set_origin(actor.subject(), origin),
                    None => rt.clear_origin(actor.subject()),
                }
                let detail = describe(&actor);
                self.event("actor_updated", detail.clone()).await;
                Ok(detail)
            }
            Command::StopActor { actor } => {
                let actor = rt.stop_actor(&actor).await.map_err(|e| e.to_string())?;
                let detail = describe(&actor);
                self.event("actor_stopped", detail.clone()).await;
                Ok(detail)
            }
            Command::ScaleActor {
                actor,
                max_concurrent,
            } => {
                rt.scale_actor(&actor, max_concurrent)
                    .map_err(|e| e.to_string())?;
                let detail =
                    serde_json::json!({ "actor": actor, "max_concurrent": max_concurrent });
                self.event("actor_scaled", detail.clone()).await;
                Ok(detail)
            }
            Command::PutLink { mut link } => {
                link.contract_id = super::config::contract_id(&link.contract_id);
                rt.add_link(&link).await.map_err(|e| e.to_string())?;
                let detail = serde_json::json!({
                    "actor": link.actor, "contract": link.contract_id,
                    "name": link.link_name, "provider": link.provider,
                });
                self.event("link_added", detail.clone()).await;
                Ok(detail)
            }
            Command::DelLink {
                actor,
                contract,
                name,
            } => {
                let contract = super::config::contract_id(&contract);
                rt.remove_link(&actor, &contract, &name)
                    .await
                    .map_err(|e| e.to_string())?;
                let detail =
                    serde_json::json!({ "actor": actor, "contract": contract, "name": name });
                self.event("link_removed", detail.clone()).await;
                Ok(detail)
            }
        }
    }
}

/// The operator's side: inventory and commands, signed with the cluster key.
pub struct ControlClient {
    client: async_nats::Client,
    lattice: String,
    cluster: KeyPair,
    verifier: EnvelopeVerifier,
}

impl std::fmt::Debug for ControlClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlClient")
            .field("lattice", &self.lattice)
            .finish_non_exhaustive()
    }
}

/// The operator's identity on requests: not an actor, but the envelope names one.
fn operator() -> WireActor {
    WireActor {
        subject: String::new(),
        name: "operator".into(),
        issuer: String::new(),
        caps: Vec::new(),
    }
}

impl ControlClient {
    /// A client of `lattice` on `client`, signing with `cluster` (whose public key, and
    /// `trusted`, must have signed the answers).
    pub fn new(
        client: async_nats::Client,
        lattice: &str,
        cluster: KeyPair,
        trusted: &[String],
    ) -> Result<Self, String> {
        let mut keys = vec![cluster.public_key()];
        keys.extend(trusted.iter().cloned());
        Ok(ControlClient {
            verifier: EnvelopeVerifier::new("", lattice, &keys)?,
            client,
            lattice: lattice.to_string(),
            cluster,
        })
    }

    /// The signed envelope of a request to `to` on `subject`, carrying `command`.
    fn envelope(
        &self,
        to: &str,
        subject: &str,
        operation: &str,
        command: Option<serde_json::Value>,
        body: &[u8],
        wait: Duration,
    ) -> Result<(String, String), String> {
        let envelope = Envelope {
            v: WIRE_VERSION,
            kind: RequestKind::Control,
            actor: operator(),
            contract: "sigil:control".into(),
            link: to.to_string(),
            operation: operation.to_string(),
            hash: wire::body_hash(body),
            deadline_ms: wire::now_ms()
                .saturating_add(u64::try_from(wait.as_millis()).unwrap_or(u64::MAX)),
            depth: 0,
            lattice: self.lattice.clone(),
            subject: subject.to_string(),
            command,
        };
        wire::sign_envelope(&self.cluster, to, envelope)
    }

    fn open(&self, jti: &str, answer: &async_nats::Message) -> Result<Vec<u8>, String> {
        wire::open_answer(answer, jti, |signer| {
            self.verifier
                .trusted(signer.unwrap_or_default())
                .ok_or_else(|| format!("an answer is not signed by a trusted host ({signer:?})"))
        })?
        .map(|b| b.to_vec())
        .map_err(|(_, text)| text)
    }

    /// Every host that answers within `wait`.
    pub async fn hosts(&self, wait: Duration) -> Result<Vec<HostInfo>, String> {
        let subject = hosts_subject(&self.lattice);
        let (token, jti) = self.envelope("hosts", &subject, "hosts", None, b"", wait)?;
        let inbox = self.client.new_inbox();
        let mut answers = self
            .client
            .subscribe(inbox.clone())
            .await
            .map_err(|e| format!("cannot subscribe: {e}"))?;
        let mut headers = HeaderMap::new();
        headers.insert(HEADER_INVOCATION, token.as_str());
        self.client
            .publish_with_reply_and_headers(subject, inbox, headers, Vec::new().into())
            .await
            .map_err(|e| format!("cannot ask the hosts: {e}"))?;
        let mut hosts = Vec::new();
        let until = tokio::time::Instant::now() + wait;
        while let Ok(Some(answer)) = tokio::time::timeout_at(until, answers.next()).await {
            match self
                .open(&jti, &answer)
                .and_then(|b| serde_json::from_slice::<HostInfo>(&b).map_err(|e| e.to_string()))
            {
                Ok(info) => hosts.push(info),
                Err(e) => tracing::warn!(error = %e, "an inventory answer was refused"),
            }
        }
        hosts.sort_by(|a, b| a.name.cmp(&b.name).then(a.id.cmp(&b.id)));
        Ok(hosts)
    }

    /// Sends `command` (with `body`, a module for start and update) to the host `host`;
    /// answers its JSON answer.
    pub async fn command(
        &self,
        host: &str,
        command: &Command,
        body: Vec<u8>,
        wait: Duration,
    ) -> Result<serde_json::Value, String> {
        let subject = host_subject(&self.lattice, host);
        let json = serde_json::to_value(command).map_err(|e| e.to_string())?;
        let (token, jti) =
            self.envelope(host, &subject, command.name(), Some(json), &body, wait)?;
        let mut headers = HeaderMap::new();
        headers.insert(HEADER_INVOCATION, token.as_str());
        let answer = self
            .client
            .send_request(
                subject,
                async_nats::Request::new()
                    .headers(headers)
                    .payload(body.into())
                    .timeout(Some(wait)),
            )
            .await
            .map_err(|e| match e.kind() {
                async_nats::RequestErrorKind::NoResponders => {
                    format!("no host {host} on lattice {}", self.lattice)
                }
                _ => format!("host {host}: {e}"),
            })?;
        let body = self.open(&jti, &answer)?;
        serde_json::from_slice(&body).map_err(|e| format!("malformed answer: {e}"))
    }

    /// The events of every host of the lattice, as they come.
    pub async fn events(&self) -> Result<impl futures::Stream<Item = HostEvent> + use<>, String> {
        let events = self
            .client
            .subscribe(format!("sigil.{}.evt.>", self.lattice))
            .await
            .map_err(|e| format!("cannot subscribe: {e}"))?;
        Ok(events.filter_map(|m| async move { serde_json::from_slice(&m.payload).ok() }))
    }
}

/// A link definition for [`Command::PutLink`].
pub fn link(actor: &str, contract: &str, provider: &str, config: LinkConfig) -> LinkDefinition {
    LinkDefinition {
        actor: actor.to_string(),
        contract_id: super::config::contract_id(contract),
        link_name: sigil_providers::DEFAULT_LINK_NAME.to_string(),
        provider: provider.to_string(),
        config,
    }
}
