//! Policy control: what this deployment allows, on top of what the signed claims grant.
//!
//! Claims say what a module may ask for; a policy says what this host lets it do. Three
//! decision points consult the policy, each with a documented input document:
//!
//! - **start**: an actor is about to start (its verified claims, the host's labels);
//! - **link**: a link is about to be added (actor, contract, link name, provider, and the
//!   *keys* of the link configuration, never its values);
//! - **invoke**: an actor calls a capability (actor, contract, link, operation, payload
//!   size, and the workflow run and step when the call happens inside one).
//!
//! The answer is [`Decision::Allow`] or [`Decision::Deny`] with a reason; a denial reaches
//! the caller's error and the log. The capability gate of the claims always runs first: a
//! policy can only deny what the claims allow, never grant what they lack.
//!
//! Deciders sit behind the small [`PolicyDecider`] trait: [`rego::RegoPolicy`] evaluates
//! Rego files in-process, [`service::PolicyService`] asks a decision service over NATS, and
//! [`PolicyChain`] asks several in turn. A host with no policy holds none and pays nothing.
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use sigil_host::policy::{Decision, DecisionPoint, PolicyDecider, rego::RegoPolicy};
//!
//! let policy = RegoPolicy::from_sources(vec![(
//!     "kv.rego".into(),
//!     r#"package sigil.invoke
//! deny contains "no deletes here" if input.operation == "Delete"
//! "#
//!     .into(),
//! )])?;
//! let input = serde_json::json!({"operation": "Delete"});
//! assert_eq!(
//!     policy.decide_blocking(DecisionPoint::Invoke, &input),
//!     Decision::Deny("no deletes here".into())
//! );
//! # Ok(()) }
//! ```

mod cache;
pub mod rego;
pub mod service;

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use sigil_claims::VerifiedClaims;
use sigil_providers::{ActorIdentity, LinkDefinition};

pub use cache::InvocationGuard;

/// Where in the host a decision is asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DecisionPoint {
    /// An actor is about to start.
    Start,
    /// A link is about to be added.
    Link,
    /// An actor calls a capability.
    Invoke,
}

impl DecisionPoint {
    /// The point's name: `start`, `link` or `invoke` (the Rego package `sigil.<name>`).
    pub fn as_str(self) -> &'static str {
        match self {
            DecisionPoint::Start => "start",
            DecisionPoint::Link => "link",
            DecisionPoint::Invoke => "invoke",
        }
    }
}

impl std::fmt::Display for DecisionPoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A policy's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Go ahead.
    Allow,
    /// Refused, with the reason the caller and the log see.
    Deny(String),
}

impl Decision {
    /// True for [`Decision::Allow`].
    pub fn is_allow(&self) -> bool {
        matches!(self, Decision::Allow)
    }
}

/// What a decider resolves to.
pub type DecisionFuture<'a> = Pin<Box<dyn Future<Output = Decision> + Send + 'a>>;

/// Which fields of the invocation input a decider's answers may depend on, beyond the
/// actor, contract, link and operation (which every cached decision is keyed by).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct InputUse {
    /// The answer may change with `payload_size`.
    pub payload_size: bool,
    /// The answer may change with `workflow` (run and step).
    pub workflow: bool,
}

impl InputUse {
    /// Every field: the safe choice when nothing is known about the decider.
    pub const ALL: InputUse = InputUse {
        payload_size: true,
        workflow: true,
    };

    /// The fields either of two deciders uses.
    pub fn union(self, other: InputUse) -> InputUse {
        InputUse {
            payload_size: self.payload_size || other.payload_size,
            workflow: self.workflow || other.workflow,
        }
    }
}

/// Whether, and how long, invocation decisions may be reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caching {
    /// Ask every time.
    Never,
    /// Reuse until the decider's [`PolicyDecider::generation`] changes (a reload).
    UntilChanged(InputUse),
    /// Reuse for at most this long, and never across a change of generation.
    For(Duration, InputUse),
}

impl Caching {
    /// The stricter of two cachings: what holds for a chain of both deciders.
    pub fn combine(self, other: Caching) -> Caching {
        use Caching::*;
        match (self, other) {
            (Never, _) | (_, Never) => Never,
            (UntilChanged(a), UntilChanged(b)) => UntilChanged(a.union(b)),
            (UntilChanged(a), For(t, b)) | (For(t, a), UntilChanged(b)) => For(t, a.union(b)),
            (For(s, a), For(t, b)) => For(s.min(t), a.union(b)),
        }
    }
}

/// Decides whether something may happen. Implementations: [`rego::RegoPolicy`],
/// [`service::PolicyService`], [`PolicyChain`].
pub trait PolicyDecider: Send + Sync + 'static {
    /// What this decider is, for logs (e.g. "Rego policy host.rego").
    fn describe(&self) -> String;

    /// Decides at `point` on `input` (the documented input document of that point).
    fn decide<'a>(
        &'a self,
        point: DecisionPoint,
        input: &'a serde_json::Value,
    ) -> DecisionFuture<'a>;

    /// [`PolicyDecider::decide`], blocking the calling thread until the answer is in.
    fn decide_blocking(&self, point: DecisionPoint, input: &serde_json::Value) -> Decision;

    /// A number that changes whenever earlier answers may no longer hold (a reload).
    fn generation(&self) -> u64 {
        0
    }

    /// Whether invocation decisions may be cached, and on which fields they depend.
    fn caching(&self) -> Caching {
        Caching::Never
    }
}

/// Several deciders asked in turn: the first denial wins, and all must allow.
pub struct PolicyChain {
    deciders: Vec<Arc<dyn PolicyDecider>>,
}

impl std::fmt::Debug for PolicyChain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyChain")
            .field("deciders", &self.describe())
            .finish()
    }
}

impl PolicyChain {
    /// A chain asking `deciders` in order.
    pub fn new(deciders: Vec<Arc<dyn PolicyDecider>>) -> Self {
        PolicyChain { deciders }
    }
}

impl PolicyDecider for PolicyChain {
    fn describe(&self) -> String {
        let parts: Vec<String> = self.deciders.iter().map(|d| d.describe()).collect();
        parts.join(", then ")
    }

    fn decide<'a>(
        &'a self,
        point: DecisionPoint,
        input: &'a serde_json::Value,
    ) -> DecisionFuture<'a> {
        Box::pin(async move {
            for decider in &self.deciders {
                let decision = decider.decide(point, input).await;
                if !decision.is_allow() {
                    return decision;
                }
            }
            Decision::Allow
        })
    }

    fn decide_blocking(&self, point: DecisionPoint, input: &serde_json::Value) -> Decision {
        for decider in &self.deciders {
            let decision = decider.decide_blocking(point, input);
            if !decision.is_allow() {
                return decision;
            }
        }
        Decision::Allow
    }

    fn generation(&self) -> u64 {
        self.deciders
            .iter()
            .fold(0u64, |sum, d| sum.wrapping_add(d.generation()))
    }

    fn caching(&self) -> Caching {
        self.deciders
            .iter()
            .map(|d| d.caching())
            .reduce(Caching::combine)
            .unwrap_or(Caching::UntilChanged(InputUse::default()))
    }
}

/// The workflow run and step an invocation belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct WorkflowStep {
    /// The run's ID.
    pub run: String,
    /// The step's name.
    pub step: String,
}

tokio::task_local! {
    /// The workflow step whose actor call is running on this task; set by the workflow
    /// scheduler around each step, read by invocation decisions.
    pub static WORKFLOW_STEP: WorkflowStep;
}

/// The workflow step running on the current task, if any.
pub fn current_workflow_step() -> Option<WorkflowStep> {
    WORKFLOW_STEP.try_with(Clone::clone).ok()
}

/// The actor as the `start` decision sees it: its verified claims.
#[derive(Debug, Clone, Serialize)]
pub struct ActorClaims {
    /// The module's public key (`M...`).
    pub subject: String,
    /// The signing account (`A...`).
    pub issuer: String,
    /// The name in the claims, if any.
    pub name: Option<String>,
    /// Granted capability contract IDs.
    pub caps: Vec<String>,
    /// Tags.
    pub tags: Vec<String>,
    /// Revision.
    pub rev: Option<i32>,
    /// Version string.
    pub ver: Option<String>,
    /// Expiry, seconds since the Unix epoch.
    pub expires: Option<u64>,
    /// Not valid before, seconds since the Unix epoch.
    pub not_before: Option<u64>,
    /// Issue time, seconds since the Unix epoch.
    pub issued_at: u64,
}

impl ActorClaims {
    /// The claims as the policy sees them.
    pub fn from_verified(claims: &VerifiedClaims) -> Self {
        ActorClaims {
            subject: claims.subject().to_string(),
            issuer: claims.issuer().to_string(),
            name: claims.name().map(str::to_string),
            caps: claims.capabilities().to_vec(),
            tags: claims.tags().to_vec(),
            rev: claims.rev(),
            ver: claims.ver().map(str::to_string),
            expires: claims.expires(),
            not_before: claims.not_before(),
            issued_at: claims.issued_at(),
        }
    }
}

/// The host as policies see it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct HostInfo {
    /// The host's name.
    pub name: String,
    /// The host's labels (`[host] labels`).
    pub labels: BTreeMap<String, String>,
}

/// The input document of a `start` decision.
#[derive(Debug, Clone, Serialize)]
pub struct StartInput {
    /// The actor's verified claims.
    pub actor: ActorClaims,
    /// This host.
    pub host: HostInfo,
    /// Now, seconds since the Unix epoch.
    pub now: u64,
}

/// The actor as the `link` and `invoke` decisions see it.
#[derive(Debug, Clone, Serialize)]
pub struct ActorRef {
    /// The module's public key.
    pub subject: String,
    /// The actor's name (its public key if it has none).
    pub name: String,
    /// The signing account.
    pub issuer: String,
    /// Granted capability contract IDs.
    pub caps: Vec<String>,
    /// Tags of its claims.
    pub tags: Vec<String>,
}

/// The input document of a `link` decision.
#[derive(Debug, Clone, Serialize)]
pub struct LinkInput {
    /// The linked actor.
    pub actor: ActorRef,
    /// The contract ID.
    pub contract_id: String,
    /// The link name.
    pub link_name: String,
    /// The provider instance.
    pub provider: String,
    /// The keys of the link configuration (values may hold secrets and are never shown).
    pub config_keys: Vec<String>,
    /// This host.
    pub host: HostInfo,
    /// Now, seconds since the Unix epoch.
    pub now: u64,
}

/// The input document of an `invoke` decision.
#[derive(Debug, Clone, Serialize)]
pub struct InvocationInput<'a> {
    /// The calling actor.
    pub actor: &'a ActorRef,
    /// The contract ID of the capability.
    pub contract_id: &'a str,
    /// The link name.
    pub link_name: &'a str,
    /// The operation within the contract.
    pub operation: &'a str,
    /// The request payload's size in bytes.
    pub payload_size: usize,
    /// The workflow run and step, when the call is part of one.
    pub workflow: Option<&'a WorkflowStep>,
    /// This host.
    pub host: &'a HostInfo,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A policy's refusal, naming what was refused and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} denied by policy: {reason}")]
pub struct PolicyDenied {
    /// What was refused, e.g. "starting actor echo (M...)".
    pub what: String,
    /// The policy's reason.
    pub reason: String,
}

/// A host's policy: the decider and what it knows of the host. Cheap to clone.
#[derive(Clone)]
pub struct Enforcer {
    decider: Arc<dyn PolicyDecider>,
    host: Arc<HostInfo>,
    denials: Arc<DenialLog>,
}

/// A policy denial, as kept for operators.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Denial {
    /// When (Unix milliseconds).
    pub at_ms: u64,
    /// The decision point: `start`, `link` or `invoke`.
    pub point: String,
    /// What was denied.
    pub what: String,
    /// Why, as the policy said.
    pub reason: String,
}

/// The most recent policy denials of a host (at most [`DenialLog::KEEP`]), and a feed of
/// new ones.
#[derive(Debug)]
pub struct DenialLog {
    recent: std::sync::Mutex<std::collections::VecDeque<Denial>>,
    feed: tokio::sync::broadcast::Sender<Denial>,
}

impl Default for DenialLog {
    fn default() -> Self {
        DenialLog {
            recent: std::sync::Mutex::default(),
            feed: tokio::sync::broadcast::channel(64).0,
        }
    }
}

impl DenialLog {
    /// How many denials are kept.
    pub const KEEP: usize = 200;

    /// Records a denial.
    pub fn record(&self, point: DecisionPoint, what: String, reason: &str) {
        let denial = Denial {
            at_ms: crate::workflow::state::now_ms(),
            point: point.as_str().to_string(),
            what,
            reason: reason.to_string(),
        };
        let mut recent = self
            .recent
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if recent.len() == Self::KEEP {
            recent.pop_front();
        }
        recent.push_back(denial.clone());
        drop(recent);
        let _ = self.feed.send(denial);
    }

    /// The denials kept, oldest first.
    pub fn recent(&self) -> Vec<Denial> {
        self.recent
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .cloned()
            .collect()
    }

    /// New denials from now on.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Denial> {
        self.feed.subscribe()
    }
}

impl std::fmt::Debug for Enforcer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Enforcer")
            .field("decider", &self.decider.describe())
            .field("host", &self.host)
            .finish()
    }
}

impl Enforcer {
    /// Enforces `decider`'s answers on a host described by `host`.
    pub fn new(decider: Arc<dyn PolicyDecider>, host: HostInfo) -> Self {
        Enforcer {
            decider,
            host: Arc::new(host),
            denials: Arc::default(),
        }
    }

    /// The decider.
    pub fn decider(&self) -> &Arc<dyn PolicyDecider> {
        &self.decider
    }

    /// The denials of this host's policy.
    pub fn denials(&self) -> &Arc<DenialLog> {
        &self.denials
    }

    /// The `start` decision for an actor with these verified claims (blocks for a remote
    /// decider).
    pub fn check_start(&self, claims: &VerifiedClaims) -> Result<(), PolicyDenied> {
        let input = StartInput {
            actor: ActorClaims::from_verified(claims),
            host: (*self.host).clone(),
            now: now(),
        };
        let what = format!(
            "starting actor {} ({})",
            claims.name().unwrap_or(claims.subject()),
            claims.subject()
        );
        let decision = match serde_json::to_value(&input) {
            Ok(value) => self.decider.decide_blocking(DecisionPoint::Start, &value),
            Err(e) => Decision::Deny(format!("cannot build the policy input: {e}")),
        };
        self.conclude(DecisionPoint::Start, what, decision)
    }

    /// The `link` decision for `definition` on `actor`.
    pub async fn check_link(
        &self,
        actor: &ActorIdentity,
        tags: &[String],
        definition: &LinkDefinition,
    ) -> Result<(), PolicyDenied> {
        let input = LinkInput {
            actor: actor_ref(actor, tags),
            contract_id: definition.contract_id.clone(),
            link_name: definition.link_name.clone(),
            provider: definition.provider.clone(),
            config_keys: definition.config.0.keys().cloned().collect(),
            host: (*self.host).clone(),
            now: now(),
        };
        let what = format!(
            "link {} `{}` of actor {} to provider {:?}",
            definition.contract_id,
            definition.link_name,
            actor.describe(),
            definition.provider
        );
        let decision = match serde_json::to_value(&input) {
            Ok(value) => self.decider.decide(DecisionPoint::Link, &value).await,
            Err(e) => Decision::Deny(format!("cannot build the policy input: {e}")),
        };
        self.conclude(DecisionPoint::Link, what, decision)
    }

    /// The guard of one actor's capability calls, with its own decision cache.
    pub fn guard(&self, actor: &ActorIdentity, tags: &[String]) -> InvocationGuard {
        InvocationGuard::new(
            self.decider.clone(),
            self.host.clone(),
            actor_ref(actor, tags),
            self.denials.clone(),
        )
    }

    fn conclude(
        &self,
        point: DecisionPoint,
        what: String,
        decision: Decision,
    ) -> Result<(), PolicyDenied> {
        match decision {
            Decision::Allow => {
                tracing::debug!(point = point.as_str(), %what, "policy allowed");
                Ok(())
            }
            Decision::Deny(reason) => {
                tracing::warn!(point = point.as_str(), %what, %reason, "policy denied");
                self.denials.record(point, what.clone(), &reason);
                Err(PolicyDenied { what, reason })
            }
        }
    }
}

fn actor_ref(actor: &ActorIdentity, tags: &[String]) -> ActorRef {
    ActorRef {
        subject: actor.subject.clone(),
        name: actor.name.clone(),
        issuer: actor.issuer.clone(),
        caps: actor.capabilities.iter().cloned().collect(),
        tags: tags.to_vec(),
    }
}
