//! Which queue route each step's actor is reached on.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::backend::{ActorRoute, route};
use super::spec::{SpecError, Workflow};
use crate::oci::{Fetched, ModuleRef, ModuleSource, Registry};
use crate::up::Runtime;

/// How a step names its actor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActorRef {
    /// A signed module file.
    File(PathBuf),
    /// A signed module in a registry (`oci://...`).
    Oci(ModuleRef),
    /// A public key or a name.
    Route(ActorRoute),
}

/// Reads a step's `actor`: an `oci://` reference, a path (it ends in `.wasm` or contains
/// `/`), a module public key (56 characters starting with `M`), or a name.
pub fn actor_ref(actor: &str, base: &Path) -> Result<ActorRef, SpecError> {
    let actor = actor.trim();
    if ModuleRef::is_reference(actor) {
        return ModuleRef::parse(actor)
            .map(ActorRef::Oci)
            .map_err(|e| SpecError(e.to_string()));
    }
    if actor.ends_with(".wasm") || actor.contains('/') {
        let p = Path::new(actor);
        return Ok(ActorRef::File(if p.is_absolute() {
            p.to_path_buf()
        } else {
            base.join(p)
        }));
    }
    if actor.len() == 56
        && actor.starts_with('M')
        && actor
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
    {
        return Ok(ActorRef::Route(ActorRoute::Key(actor.to_string())));
    }
    if is_token(actor) {
        return Ok(ActorRef::Route(ActorRoute::Name(actor.to_string())));
    }
    Err(SpecError(format!(
        "actor {actor:?} is neither an oci:// reference, a .wasm path, a module key nor a name \
         made of letters, digits, `_` and `-`"
    )))
}

/// Whether `s` can be a NATS subject token (and so a route by name).
pub fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// The route of every step. Module files are read, and references pulled (with
/// `registry`), once each; each module is verified against `policy` and routed by its
/// public key; `loaded` is called with where it came from (a path, or the reference pinned
/// to its digest) and its bytes, to load it on this host for instance.
pub async fn resolve_routes(
    workflow: &Workflow,
    base: &Path,
    policy: &sigil_claims::Policy,
    registry: Option<&Arc<Registry>>,
    mut loaded: impl FnMut(&str, Arc<[u8]>) -> Result<(), String>,
) -> Result<HashMap<String, String>, SpecError> {
    let mut modules: HashMap<ModuleSource, String> = HashMap::new();
    let mut routes = HashMap::new();
    for step in &workflow.spec.steps {
        let at = |m: String| SpecError(format!("step {:?}: {m}", step.name));
        let source = match actor_ref(&step.actor, base).map_err(|e| at(e.0))? {
            ActorRef::Route(r) => {
                routes.insert(step.name.clone(), route(&r));
                continue;
            }
            ActorRef::File(path) => ModuleSource::File(path),
            ActorRef::Oci(r) => ModuleSource::Oci(r),
        };
        if let Some(r) = modules.get(&source) {
            routes.insert(step.name.clone(), r.clone());
            continue;
        }
        let fetched = match (&source, registry) {
            (_, Some(registry)) => registry.fetch(&source).await.map_err(|e| e.to_string()),
            (ModuleSource::File(path), None) => std::fs::read(path)
                .map(|b| Fetched {
                    bytes: b.into(),
                    origin: path.display().to_string(),
                })
                .map_err(|e| format!("cannot read {}: {e}", path.display())),
            (ModuleSource::Oci(r), None) => Err(format!("{r}: no registry settings to pull it")),
        }
        .map_err(|e| match &source {
            ModuleSource::File(_) => at(format!("cannot read actor: {e}")),
            ModuleSource::Oci(_) => at(e),
        })?;
        let claims = sigil_claims::verify(&fetched.bytes, policy)
            .map_err(|e| at(format!("actor {} refused: {e}", fetched.origin)))?;
        let r = route(&ActorRoute::Key(claims.subject().to_string()));
        loaded(&fetched.origin, fetched.bytes).map_err(at)?;
        modules.insert(source, r.clone());
        routes.insert(step.name.clone(), r);
    }
    Ok(routes)
}

/// The route of every step of a spec that came over the network: actors must be named by
/// key or name, since a remote caller may not make the host read files, or by an `oci://`
/// reference to a registry this host lists in its `[[registries]]` (or as insecure). Such a
/// module is pulled, verified under the host's policy and started on this host unless it
/// runs already, so that this host serves its steps.
pub async fn resolve_remote_routes(
    workflow: &Workflow,
    runtime: Option<&Runtime>,
) -> Result<HashMap<String, String>, SpecError> {
    let mut routes = HashMap::new();
    for step in &workflow.spec.steps {
        let at = |m: String| SpecError(format!("step {:?}: {m}", step.name));
        match actor_ref(&step.actor, Path::new("."))? {
            ActorRef::Route(r) => {
                routes.insert(step.name.clone(), route(&r));
            }
            ActorRef::Oci(r) => {
                let runtime = runtime.ok_or_else(|| {
                    at(format!("{r}: this endpoint starts no modules by reference"))
                })?;
                let registry = runtime.module_registry().ok_or_else(|| {
                    at(format!("{r}: this host pulls no modules from registries"))
                })?;
                if !registry.options().knows(r.registry()) {
                    return Err(at(format!(
                        "{r}: registry {} is not one this host lists in [[registries]]; a spec \
                         sent over the network may name modules only in those",
                        r.registry()
                    )));
                }
                let pulled = registry.pull(&r).await.map_err(|e| at(e.to_string()))?;
                // The module of this digest runs here already: route to it.
                let origin = pulled.pinned.to_string();
                if let Some(subject) = runtime.actor_with_origin(&origin) {
                    routes.insert(step.name.clone(), route(&ActorRoute::Key(subject)));
                    continue;
                }
                let claims = sigil_claims::verify(&pulled.module, runtime.host().policy())
                    .map_err(|e| at(format!("actor {} refused: {e}", pulled.pinned)))?;
                if runtime.host().actor(claims.subject()).is_none() {
                    let actor = runtime
                        .load_actor(pulled.module.clone())
                        .await
                        .map_err(|e| at(format!("actor {} refused: {e}", pulled.pinned)))?;
                    runtime.set_origin(actor.subject(), pulled.pinned.to_string());
                }
                routes.insert(
                    step.name.clone(),
                    route(&ActorRoute::Key(claims.subject().to_string())),
                );
            }
            ActorRef::File(_) => {
                return Err(at(
                    "name its actor by public key, name or oci:// reference; a spec sent over \
                     the network cannot refer to files"
                        .into(),
                ));
            }
        }
    }
    Ok(routes)
}
