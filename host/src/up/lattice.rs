//! Actor-to-actor calls (`sigil:actor`): served by an actor on this host when it runs the
//! target, otherwise by whichever host of the lattice does, over NATS request/reply.
//!
//! A call across hosts travels in the same signed envelope as a call to a provider plugin
//! (see `docs/provider-plugins.md`), addressed to the target and signed with the lattice's
//! cluster key; the serving host checks it like a plugin does (trusted signer, target,
//! body hash, deadline, no replay) and signs its answer, which the caller checks in turn.
//! Calls nest at most [`MAX_DEPTH`] deep, on one host or across many, so a cycle of
//! actors calling each other ends with a clear error instead of running until deadlines.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use async_nats::{HeaderMap, RequestErrorKind};
use futures::StreamExt;
use sigil_providers::plugin::Lattice;
use sigil_providers::plugin::wire::{
    self, Envelope, EnvelopeVerifier, ErrorKind, HEADER_INVOCATION, HOSTS_QUEUE_GROUP, RequestKind,
    WIRE_VERSION,
};
use tokio::task::JoinHandle;

use super::runtime::Runtime;
use crate::ActorIdentity;
use crate::dispatch::ActorCalls;
use crate::engine::{HostCall, HostCallFuture};

pub use sigil_actor::contracts::actor::MAX_DEPTH;

tokio::task_local! {
    /// How deep the invocation running on this task was called (0: not by an actor).
    static CALL_DEPTH: u32;
}

/// Routes actors' calls to other actors: to this host's actors first, then the lattice's.
#[derive(Default)]
pub struct ActorRouter {
    runtime: OnceLock<Weak<Runtime>>,
    lattice: OnceLock<Arc<LatticeCalls>>,
}

impl std::fmt::Debug for ActorRouter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ActorRouter")
            .field("lattice", &self.lattice.get().map(|l| &l.lattice))
            .finish_non_exhaustive()
    }
}

/// One subscription taking calls for a target, and how to end it.
struct Serving {
    stop: tokio::sync::oneshot::Sender<()>,
    task: JoinHandle<()>,
}

/// The lattice side: serving this host's actors to others, and calling theirs.
struct LatticeCalls {
    lattice: Lattice,
    client: async_nats::Client,
    verifier: EnvelopeVerifier,
    serving: Mutex<HashMap<String, Serving>>,
}

impl ActorRouter {
    /// A router with no runtime yet ([`ActorRouter::attach`] gives it one).
    pub fn new() -> Self {
        Self::default()
    }

    /// The runtime whose actors serve local calls.
    pub fn attach(&self, runtime: &Arc<Runtime>) {
        let _ = self.runtime.set(Arc::downgrade(runtime));
    }

    fn runtime(&self) -> Result<Arc<Runtime>, String> {
        self.runtime
            .get()
            .and_then(Weak::upgrade)
            .ok_or_else(|| "the host has stopped".to_string())
    }

    /// Joins `lattice`: calls to actors this host does not run go to the lattice, and
    /// this host's actors take calls from it (those loaded now, and later ones through
    /// [`ActorRouter::serve_actor`]). `trusted` are the cluster keys whose envelopes are
    /// accepted besides the lattice's own.
    pub async fn join(&self, lattice: Lattice, trusted: &[String]) -> Result<(), String> {
        let client = lattice.client().await.map_err(|e| e.to_string())?;
        let mut keys = vec![lattice.cluster.public_key()];
        keys.extend(trusted.iter().cloned());
        let verifier = EnvelopeVerifier::new("", &lattice.name, &keys)?;
        let calls = Arc::new(LatticeCalls {
            lattice,
            client,
            verifier,
            serving: Mutex::new(HashMap::new()),
        });
        if self.lattice.set(calls).is_err() {
            return Err("the host has joined a lattice already".into());
        }
        let runtime = self.runtime()?;
        for actor in runtime.host().actors() {
            self.serve_actor(&actor).await?;
        }
        Ok(())
    }

    /// Takes calls from the lattice for `actor`, under its public key and its call alias.
    pub async fn serve_actor(&self, actor: &crate::Actor) -> Result<(), String> {
        let Some(calls) = self.lattice.get() else {
            return Ok(());
        };
        let mut targets = vec![actor.subject().to_string()];
        if let Some(alias) = actor.claims().call_alias() {
            if wire::is_subject_token(alias) {
                targets.push(alias.to_string());
            } else {
                tracing::warn!(
                    actor = actor.name(),
                    alias,
                    "call alias not usable on the lattice (letters, digits, - and _ only)"
                );
            }
        }
        for target in targets {
            let subject = wire::actor_subject(&calls.lattice.name, &target);
            if lock(&calls.serving).contains_key(&subject) {
                continue;
            }
            let mut requests =
                wire::subscribe(&calls.client, subject.clone(), Some(HOSTS_QUEUE_GROUP)).await?;
            let (calls2, runtime, target2) =
                (calls.clone(), self.runtime.get().cloned(), target.clone());
            let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
            let task = tokio::spawn(async move {
                loop {
                    let message = tokio::select! {
                        _ = &mut stopped => {
                            // Unsubscribed before the host says it left, so no call is
                            // routed here in between.
                            let _ = requests.unsubscribe().await;
                            break;
                        }
                        m = requests.next() => match m {
                            Some(m) => m,
                            None => break,
                        },
                    };
                    let (calls, runtime, target) =
                        (calls2.clone(), runtime.clone(), target2.clone());
                    tokio::spawn(async move {
                        let runtime = runtime.and_then(|r| r.upgrade());
                        calls.serve(runtime, &target, message).await;
                    });
                }
            });
            lock(&calls.serving).insert(subject, Serving { stop, task });
        }
        // Once the server has the subscriptions, calls from other connections find them.
        wire::settle(&calls.client).await?;
        Ok(())
    }

    /// Stops taking lattice calls for the actor with this public key and call alias.
    pub async fn unserve_actor(&self, subject: &str, alias: Option<&str>) {
        let Some(calls) = self.lattice.get() else {
            return;
        };
        let ended: Vec<Serving> = {
            let mut serving = lock(&calls.serving);
            std::iter::once(subject)
                .chain(alias)
                .filter_map(|t| serving.remove(&wire::actor_subject(&calls.lattice.name, t)))
                .collect()
        };
        calls.end(ended).await;
    }

    /// Stops serving the lattice.
    pub async fn leave(&self) {
        if let Some(calls) = self.lattice.get() {
            let ended: Vec<Serving> = lock(&calls.serving).drain().map(|(_, s)| s).collect();
            calls.end(ended).await;
        }
    }
    async fn route(&self, caller: &ActorIdentity, call: &HostCall<'_>) -> Result<Vec<u8>, String> {
        let target = call.binding;
        let depth = CALL_DEPTH.try_with(|d| *d).unwrap_or(0) + 1;
        if depth > MAX_DEPTH {
            return Err(format!(
                "call to actor {target} refused: calls nest {depth} deep, more than \
                 {MAX_DEPTH} (do actors call each other in a cycle?)"
            ));
        }
        let runtime = self.runtime()?;
        if let Some(actor) = runtime.find_actor(target) {
            let left = call.deadline.saturating_duration_since(Instant::now());
            let invoked = CALL_DEPTH.scope(
                depth,
                runtime.invoke_nested(&actor, call.operation, call.payload),
            );
            return match tokio::time::timeout(left, invoked).await {
                Ok(result) => result.map_err(|e| format!("actor {target}: {e}")),
                Err(_) => Err(format!("call to actor {target} timed out after {left:?}")),
            };
        }
        match self.lattice.get() {
            Some(calls) => calls.call(caller, call, depth).await,
            None => Err(format!(
                "no actor {target} runs on this host, and the host is not on a lattice \
                 (give a loaded actor's public key, call alias or name)"
            )),
        }
    }
}

impl ActorCalls for ActorRouter {
    fn call<'a>(&'a self, caller: &'a ActorIdentity, call: HostCall<'a>) -> HostCallFuture<'a> {
        Box::pin(async move { self.route(caller, &call).await })
    }
}

impl LatticeCalls {
    /// Ends subscriptions, and waits until the server has dropped them.
    async fn end(&self, ended: Vec<Serving>) {
        for s in ended {
            let _ = s.stop.send(());
            let _ = s.task.await;
        }
        if let Err(e) = wire::settle(&self.client).await {
            tracing::warn!(error = %e, "leaving the lattice: the server did not confirm");
        }
    }

    /// Calls `call.binding` on whichever host of the lattice runs it.
    async fn call(
        &self,
        caller: &ActorIdentity,
        call: &HostCall<'_>,
        depth: u32,
    ) -> Result<Vec<u8>, String> {
        let target = call.binding;
        if !wire::is_subject_token(target) {
            return Err(format!(
                "no actor {target:?} runs on this host, and it is not a public key or call \
                 alias the lattice can route"
            ));
        }
        let wait = call.deadline.saturating_duration_since(Instant::now());
        if wait.is_zero() {
            return Err(format!("call to actor {target}: the deadline has passed"));
        }
        let subject = wire::actor_subject(&self.lattice.name, target);
        let envelope = Envelope {
            v: WIRE_VERSION,
            kind: RequestKind::ActorCall,
            actor: caller.into(),
            contract: sigil_claims::caps::ACTOR.to_string(),
            link: target.to_string(),
            operation: call.operation.to_string(),
            hash: wire::body_hash(call.payload),
            deadline_ms: wire::now_ms()
                .saturating_add(u64::try_from(wait.as_millis()).unwrap_or(u64::MAX)),
            depth,
            lattice: self.lattice.name.clone(),
            subject: subject.clone(),
            command: None,
        };
        let (token, jti) = wire::sign_envelope(&self.lattice.cluster, target, envelope)?;
        let mut headers = HeaderMap::new();
        headers.insert(HEADER_INVOCATION, token.as_str());
        let answer = self
            .client
            .send_request(
                subject.clone(),
                async_nats::Request::new()
                    .headers(headers)
                    .payload(call.payload.to_vec().into())
                    .timeout(Some(wait)),
            )
            .await
            .map_err(|e| match e.kind() {
                RequestErrorKind::NoResponders => format!(
                    "no actor {target} runs on this host or on any host of lattice {}",
                    self.lattice.name
                ),
                RequestErrorKind::TimedOut => {
                    format!("call to actor {target} timed out after {wait:?}")
                }
                _ => format!("call to actor {target} failed on the lattice: {e}"),
            })?;
        let opened = wire::open_answer(&answer, &jti, |signer| {
            self.verifier
                .trusted(signer.unwrap_or_default())
                .ok_or_else(|| format!("not signed by a trusted host ({signer:?})"))
        })
        .map_err(|e| format!("the answer from actor {target} was refused: {e}"))?;
        opened.map(|b| b.to_vec()).map_err(|(_, text)| text)
    }

    /// Serves one call from the lattice to the local actor `target`.
    async fn serve(
        &self,
        runtime: Option<Arc<Runtime>>,
        target: &str,
        message: async_nats::Message,
    ) {
        let Some(reply) = message.reply.clone() else {
            return;
        };
        let (jti, result) = match self.verifier.verify_message(
            target,
            RequestKind::ActorCall,
            &message,
        ) {
            Err(e) => {
                tracing::warn!(target, error = %e, "actor call from the lattice refused");
                (wire::refusal_jti(&message), Err((ErrorKind::Refused, e)))
            }
            Ok(claims) => {
                let env = claims.sigil;
                tracing::debug!(target, caller = %env.actor.name, operation = %env.operation, "actor call from the lattice");
                let result = match runtime.and_then(|r| r.find_actor(target).map(|a| (r, a))) {
                    None => Err((
                        ErrorKind::Failed,
                        format!("actor {target} has stopped on this host"),
                    )),
                    Some(_) if env.depth > MAX_DEPTH => Err((
                        ErrorKind::Failed,
                        format!(
                            "call to actor {target} refused: calls nest {} deep, more than {MAX_DEPTH}",
                            env.depth
                        ),
                    )),
                    Some((runtime, actor)) => {
                        let left =
                            Duration::from_millis(env.deadline_ms.saturating_sub(wire::now_ms()));
                        let invoked = CALL_DEPTH.scope(
                            env.depth,
                            runtime.invoke_nested(&actor, &env.operation, &message.payload),
                        );
                        match tokio::time::timeout(left, invoked).await {
                            Ok(Ok(bytes)) => Ok(bytes),
                            Ok(Err(e)) => Err((ErrorKind::Failed, format!("actor {target}: {e}"))),
                            Err(_) => Err((
                                ErrorKind::Failed,
                                format!("call to actor {target} timed out after {left:?}"),
                            )),
                        }
                    }
                };
                (claims.jti, result)
            }
        };
        let (body, error) = match result {
            Ok(bytes) => (bytes, None),
            Err((kind, text)) => (text.into_bytes(), Some(kind)),
        };
        let headers = wire::answer_headers(&self.lattice.cluster, &jti, &body, error, true);
        if let Err(e) = self
            .client
            .publish_with_headers(reply, headers, body.into())
            .await
        {
            tracing::warn!(target, error = %e, "cannot answer an actor call");
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
