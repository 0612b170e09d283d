//! Which queue route each step's actor is reached on.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::backend::{ActorRoute, route};
use super::spec::{SpecError, Workflow};

/// How a step names its actor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActorRef {
    /// A signed module file.
    File(PathBuf),
    /// A public key or a name.
    Route(ActorRoute),
}

/// Reads a step's `actor`: a path (it ends in `.wasm` or contains `/`), a module public
/// key (56 characters starting with `M`), or a name.
pub fn actor_ref(actor: &str, base: &Path) -> Result<ActorRef, SpecError> {
    let actor = actor.trim();
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
        "actor {actor:?} is neither a .wasm path, a module key nor a name made of letters, \
         digits, `_` and `-`"
    )))
}

/// Whether `s` can be a NATS subject token (and so a route by name).
pub fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// The route of every step. Module files are read and verified against `policy`, and
/// routed by their public key; `loaded` is called with each file's bytes (to load it on
/// this host, for instance).
pub fn resolve_routes(
    workflow: &Workflow,
    base: &Path,
    policy: &sigil_claims::Policy,
    mut loaded: impl FnMut(&Path, Vec<u8>) -> Result<(), String>,
) -> Result<HashMap<String, String>, SpecError> {
    let mut files: HashMap<PathBuf, String> = HashMap::new();
    let mut routes = HashMap::new();
    for step in &workflow.spec.steps {
        let at = |m: String| SpecError(format!("step {:?}: {m}", step.name));
        let r = match actor_ref(&step.actor, base).map_err(|e| at(e.0))? {
            ActorRef::Route(r) => route(&r),
            ActorRef::File(path) => {
                if let Some(r) = files.get(&path) {
                    r.clone()
                } else {
                    let bytes = std::fs::read(&path)
                        .map_err(|e| at(format!("cannot read actor {}: {e}", path.display())))?;
                    let claims = sigil_claims::verify(&bytes, policy)
                        .map_err(|e| at(format!("actor {} refused: {e}", path.display())))?;
                    let r = route(&ActorRoute::Key(claims.subject().to_string()));
                    loaded(&path, bytes).map_err(at)?;
                    files.insert(path, r.clone());
                    r
                }
            }
        };
        routes.insert(step.name.clone(), r);
    }
    Ok(routes)
}

/// The route of every step of a spec that came over the network: actors must be named by
/// key or name, since a remote caller may not make the host read files.
pub fn resolve_remote_routes(workflow: &Workflow) -> Result<HashMap<String, String>, SpecError> {
    let mut routes = HashMap::new();
    for step in &workflow.spec.steps {
        match actor_ref(&step.actor, Path::new("."))? {
            ActorRef::Route(r) => {
                routes.insert(step.name.clone(), route(&r));
            }
            ActorRef::File(_) => {
                return Err(SpecError(format!(
                    "step {:?}: name its actor by public key or name; a spec sent over the \
                     network cannot refer to files",
                    step.name
                )));
            }
        }
    }
    Ok(routes)
}
