//! `sigil up`: a long-running host built from a configuration file.
//!
//! It loads the actors, starts the providers, applies the links, serves health, metrics
//! and a link API on the admin address, and on SIGINT or SIGTERM drains in-flight
//! invocations before it exits.

pub mod admin;
pub mod argo;
mod builtin;
pub mod config;
pub mod control;
pub mod lattice;
pub mod metrics;
pub mod policy;
pub mod runtime;
pub mod workflows;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

pub use builtin::{Builtins, create_provider};
pub use config::{ConfigError, HostConfig};
pub use metrics::Metrics;
pub use runtime::{HostStatus, Runtime, RuntimeError, RuntimeLinkError, StartError};

use crate::oci::{ModuleSource, Registry};
use sigil_providers::httpserver::ServerHandle;

/// A host started from a configuration.
#[derive(Debug)]
pub struct Running {
    /// The runtime.
    pub runtime: Arc<Runtime>,
    /// Where the admin endpoint listens, if it does.
    pub admin_address: Option<SocketAddr>,
    /// The workflow service.
    pub workflows: workflows::WorkflowService,
    admin: Option<admin::AdminHandle>,
    argo: Option<ServerHandle>,
    /// Where the Argo executor plugin endpoint listens, if it does.
    pub argo_address: Option<SocketAddr>,
    /// The control interface on the lattice, if the host joined one.
    pub control: Option<control::ControlServer>,
    drain_timeout: Duration,
}

impl Running {
    /// Drains and stops everything (see [`Runtime::shutdown`]); returns the invocations
    /// still running when the drain timeout ran out.
    pub async fn shutdown(self) -> usize {
        if let Some(control) = self.control {
            control.stop().await;
        }
        self.workflows.stop();
        let left = self.runtime.shutdown(self.drain_timeout).await;
        if let Some(admin) = self.admin {
            admin.shutdown(Duration::from_secs(2)).await;
        }
        if let Some(argo) = self.argo {
            argo.shutdown(Duration::from_secs(2)).await;
        }
        left
    }
}

/// Starts a host as `config` declares: actors, providers, links, then the admin endpoint.
/// Anything refused is reported with the configuration line that declared it.
pub async fn start(config: &HostConfig) -> Result<Running, ConfigError> {
    start_with(config, Vec::new()).await
}

/// [`start`], loading `extra_actors` (module bytes, with the file or reference they came
/// from) after the configuration's own.
pub async fn start_with(
    config: &HostConfig,
    extra_actors: Vec<(String, Arc<[u8]>)>,
) -> Result<Running, ConfigError> {
    let (runtime, library) = runtime_with_actors(config).await?;

    for (origin, bytes) in extra_actors {
        let actor = runtime
            .load_actor(bytes)
            .await
            .map_err(|e| config.error_at(0, format!("actor {origin} refused: {e}")))?;
        runtime.set_origin(actor.subject(), origin);
    }

    let mut builtins = Builtins::default();
    if let Some(l) = &config.lattice {
        let cluster = nkeys::KeyPair::from_seed(&l.cluster_seed).map_err(|e| {
            config.error_for("lattice.cluster_seed", format!("the cluster seed: {e}"))
        })?;
        tracing::info!(lattice = %l.name, cluster = %cluster.public_key(), "joining the lattice");
        let lattice =
            sigil_providers::plugin::Lattice::new(&l.nats, &l.name, cluster, config.policy.clone());
        // The actors loaded above take calls from the lattice; later ones join as loaded.
        runtime
            .join_lattice(lattice.clone(), &l.cluster_issuers)
            .await
            .map_err(|e| {
                config.error_for(
                    "lattice.nats",
                    format!(
                        "[lattice] nats = {:?}: cannot join lattice {}: {e}; start NATS or fix \
                         the url",
                        l.nats, l.name
                    ),
                )
            })?;
        builtins.lattice = Some(lattice);
    }
    add_providers(config, &runtime, &builtins).await?;

    for (index, link) in config.links.iter().enumerate() {
        runtime.add_link(&link.value).await.map_err(|e| {
            config.error_in_config(&format!("links[{index}]"), link.line, e.to_string())
        })?;
    }

    let workflows = workflows::start(&runtime, config, &builtins.bus).await?;

    let (argo, argo_address) = match &config.argo {
        None => (None, None),
        Some(a) => {
            if let Some((provider, _)) = &a.wasm_http
                && !runtime.registry().provider_names().contains(provider)
            {
                return Err(config.error_for(
                    "argo.http_provider",
                    format!(
                        "http_provider = {provider:?} names no [[providers]] instance; declare \
                         an httpclient provider of that name"
                    ),
                ));
            }
            let handle = argo::serve_argo(
                workflows.scheduler.clone(),
                Some(runtime.clone()),
                a.token.clone(),
                a.artifacts.clone(),
                a.wasm_http.clone(),
                &a.address,
            )
            .await
            .map_err(|e| {
                config.error_for(
                    "argo.address",
                    format!(
                        "cannot serve the Argo plugin endpoint on {}: {e}; pick another \
                         address",
                        a.address
                    ),
                )
            })?;
            let bound = handle.local_addr();
            (Some(handle), Some(bound))
        }
    };

    let control = match (&config.lattice, &builtins.lattice) {
        (Some(settings), Some(lattice)) => Some(
            control::ControlServer::start(
                runtime.clone(),
                lattice.clone(),
                &settings.cluster_issuers,
                &config.name,
                config.labels.clone(),
                settings.heartbeat,
            )
            .await
            .map_err(|e| {
                config.error_for(
                    "lattice.nats",
                    format!("cannot serve the control interface: {e}"),
                )
            })?,
        ),
        _ => None,
    };

    let (admin, admin_address) = match &config.admin_address {
        None => (None, None),
        Some(address) => {
            let lattice = match (&config.lattice, &builtins.lattice) {
                (Some(settings), Some(lattice)) => {
                    let client = lattice.client().await.map_err(|e| {
                        config.error_for("lattice.nats", format!("the admin endpoint: {e}"))
                    })?;
                    let cluster =
                        nkeys::KeyPair::from_seed(&settings.cluster_seed).map_err(|e| {
                            config
                                .error_for("lattice.cluster_seed", format!("the cluster seed: {e}"))
                        })?;
                    control::ControlClient::new(
                        client,
                        &lattice.name,
                        cluster,
                        &settings.cluster_issuers,
                    )
                    .map(Arc::new)
                    .ok()
                }
                _ => None,
            };
            let token = admin_token(config, &runtime)?;
            let handle = admin::serve_admin(
                runtime.clone(),
                admin::AdminConfig {
                    name: config.name.clone(),
                    labels: config.labels.clone(),
                    token,
                    workflows: Some(workflows.scheduler.clone()),
                    library,
                    lattice,
                    host_id: control.as_ref().map(|c| c.id().to_string()),
                },
                address,
            )
            .await
            .map_err(|e| {
                config.error_for(
                    "host.admin_address",
                    format!(
                        "cannot serve the admin endpoint on {address}: {e}; pick another \
                         admin_address or \"off\""
                    ),
                )
            })?;
            let bound = handle.local_addr();
            tracing::info!(address = %bound, "admin endpoint and dashboard at http://{bound}/");
            (Some(handle), Some(bound))
        }
    };

    Ok(Running {
        control,
        argo,
        argo_address,
        runtime,
        admin_address,
        workflows,
        admin,
        drain_timeout: config.drain_timeout,
    })
}

/// The admin token: the configured one, else one made for this start and written (mode
/// 0600) to `<host name>.admin-token` in the host's cache directory, which the log names.
fn admin_token(config: &HostConfig, runtime: &Runtime) -> Result<String, ConfigError> {
    use std::io::Write;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    if let Some(token) = &config.admin_token {
        return Ok(token.clone());
    }
    let token = admin::generate_token();
    let dir = runtime
        .host()
        .engine()
        .cache_dir()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| std::env::temp_dir().join("sigil-admin"));
    let file = dir.join(format!("{}.admin-token", config.name));
    let written = std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .and_then(|()| {
            let _ = std::fs::remove_file(&file);
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&file)
        })
        .and_then(|mut f| f.write_all(token.as_bytes()));
    written.map_err(|e| {
        config.error_for(
            "host.admin_token",
            format!(
                "no admin_token is set, and the generated one cannot be written to {}: {e}; \
                 set admin_token",
                file.display()
            ),
        )
    })?;
    tracing::info!(file = %file.display(), "no admin_token is set: changes through the admin endpoint need the token generated in this file");
    Ok(token)
}

/// Creates the configuration's providers and adds them to `runtime`; answers them in the
/// configuration's order. Errors name the provider's table, or the key at fault in it.
async fn add_providers(
    config: &HostConfig,
    runtime: &Runtime,
    builtins: &Builtins,
) -> Result<Vec<Arc<dyn sigil_providers::Provider>>, ConfigError> {
    let mut added = Vec::with_capacity(config.providers.len());
    for (index, spec) in config.providers.iter().enumerate() {
        let p = &spec.value;
        let table = format!("providers[{index}]");
        let provider = create_provider(&p.kind, &p.config, builtins).map_err(|e| {
            config.error_in_config(
                &table,
                spec.line,
                format!("provider {:?} ({}): {e}", p.name, p.kind),
            )
        })?;
        runtime
            .add_provider(&p.name, provider.clone())
            .await
            .map_err(|e| config.error_in_config(&table, spec.line, e.to_string()))?;
        added.push(provider);
    }
    Ok(added)
}

/// The registry client of a host: its `[[registries]]` and the environment's settings,
/// caching pulled modules under the compiled-module cache (`oci/` in it).
pub fn module_registry(config: &HostConfig) -> Result<Arc<Registry>, ConfigError> {
    let mut options = config.registry.clone().with_env();
    if options.cache_dir.is_none() {
        options.cache_dir = config.engine.cache_dir.as_ref().map(|d| d.join("oci"));
    }
    Registry::new(options).map_err(|e| {
        if config.lines.get("host.cache_dir").is_some() {
            config.error_for("host.cache_dir", e.to_string())
        } else {
            config.error_at(0, e.to_string())
        }
    })
}

/// The runtime `config` asks for (engine, policy), with the configuration's actors
/// loaded.
async fn runtime_with_actors(
    config: &HostConfig,
) -> Result<(Arc<Runtime>, Vec<workflows::StoredWorkflow>), ConfigError> {
    let enforcer = policy::enforcer(config).await?;
    let runtime = Runtime::with_enforcer(config.engine.clone(), config.policy.clone(), enforcer)
        .map_err(|e| {
            let message = format!("cannot start the engine: {e}");
            if config.lines.get("host.cache_dir").is_some() {
                config.error_for("host.cache_dir", message)
            } else {
                config.error_at(0, message)
            }
        })?;

    runtime.set_module_registry(module_registry(config)?);
    let artifacts = config
        .workflows
        .artifacts
        .clone()
        .or_else(|| config.argo.as_ref().and_then(|a| a.artifacts.clone()));
    if let Some(store) = artifacts {
        runtime.host().set_artifact_store(store);
    }
    for actor in &config.actors {
        let source = &actor.value;
        runtime.start_actor(source).await.map_err(|e| {
            config.error_at(
                actor.line,
                match e {
                    StartError::Fetch(e) if matches!(source, ModuleSource::File(_)) => {
                        format!("cannot read actor {source}: {e}; build it first or fix the path")
                    }
                    StartError::Fetch(e) => format!("actor {source}: {e}"),
                    StartError::Load(e) => format!("actor {source} refused: {e}"),
                },
            )
        })?;
    }
    let library = workflows::load_library(config, &runtime).await?;
    Ok((runtime, library))
}

/// What `sigil up --check` found in a configuration that passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckReport {
    /// Actors loaded (their claims verified and the `start` policy applied).
    pub actors: usize,
    /// Providers created and found reachable.
    pub providers: usize,
    /// Links checked.
    pub links: usize,
    /// Workflow triggers whose workflows were read and resolved.
    pub triggers: usize,
}

/// Checks everything `config` declares, as [`start`] would, but starts nothing that
/// another host could notice: the configuration, the actor modules and their claims,
/// the policies (the `start` rules apply), the providers' settings, each link's claims,
/// policy and settings, the workflow triggers, and that the backends answer (the NATS of
/// the lattice, of the policy service and of workflows, Redis, the blob stores). It binds
/// no port (no admin, HTTP or Argo listener), joins no lattice, applies no link (so no
/// messaging subscription) and takes no workflow step, so it can run beside the host it
/// checks.
pub async fn check(config: &HostConfig) -> Result<CheckReport, ConfigError> {
    let mut config = config.clone();
    // A check reads the policy files once; it does not watch them.
    config.policy_control.reload = None;
    let config = &config;
    let (runtime, _) = runtime_with_actors(config).await?;
    let outcome = check_the_rest(config, &runtime).await;
    runtime.shutdown(Duration::ZERO).await;
    outcome
}

async fn check_the_rest(
    config: &HostConfig,
    runtime: &Arc<Runtime>,
) -> Result<CheckReport, ConfigError> {
    let mut builtins = Builtins::default();
    if let Some(l) = &config.lattice {
        let cluster = nkeys::KeyPair::from_seed(&l.cluster_seed).map_err(|e| {
            config.error_for("lattice.cluster_seed", format!("the cluster seed: {e}"))
        })?;
        let lattice =
            sigil_providers::plugin::Lattice::new(&l.nats, &l.name, cluster, config.policy.clone());
        lattice.client().await.map_err(|e| {
            config.error_for(
                "lattice.nats",
                format!(
                    "[lattice] nats = {:?}: {e}; start NATS or fix the url",
                    l.nats
                ),
            )
        })?;
        builtins.lattice = Some(lattice);
    }
    for (index, provider) in add_providers(config, runtime, &builtins)
        .await?
        .into_iter()
        .enumerate()
    {
        let spec = &config.providers[index];
        let (p, table) = (&spec.value, format!("providers[{index}]"));
        // A plugin runs on its own and may start after the host; the others' backends
        // must answer now.
        if p.kind != "plugin"
            && let sigil_providers::Health::Unhealthy(why) = provider.health().await
        {
            return Err(config.error_in_config(
                &table,
                spec.line,
                format!(
                    "provider {:?} ({}): its backend does not answer: {why}",
                    p.name, p.kind
                ),
            ));
        }
    }
    // The links are not applied, so the registry cannot see a second link of the same
    // actor, contract and name: look for it here.
    let mut seen = std::collections::BTreeSet::new();
    for (index, link) in config.links.iter().enumerate() {
        let l = &link.value;
        runtime.check_link(l).await.map_err(|e| {
            config.error_in_config(&format!("links[{index}]"), link.line, e.to_string())
        })?;
        let actor = runtime
            .find_actor(&l.actor)
            .map_or_else(|| l.actor.clone(), |a| a.subject().to_string());
        if !seen.insert((actor, l.contract_id.clone(), l.link_name.clone())) {
            return Err(config.error_at(
                link.line,
                format!(
                    "actor {} already has a link `{}` to {}; remove one of them or give it \
                     another name",
                    l.actor, l.link_name, l.contract_id
                ),
            ));
        }
    }
    workflows::Backend::connect(&config.workflows)
        .await
        .map_err(|e| config.error_for("workflows.nats", e))?;
    for t in &config.workflows.triggers {
        workflows::trigger_workflow(config, runtime, t).await?;
    }
    Ok(CheckReport {
        actors: config.actors.len(),
        providers: config.providers.len(),
        links: config.links.len(),
        triggers: config.workflows.triggers.len(),
    })
}

/// Runs the host until SIGINT or SIGTERM, then drains it.
pub async fn run(config: HostConfig) -> Result<(), ConfigError> {
    let running = start(&config).await?;
    let status = running.runtime.status().await;
    tracing::info!(
        host = %config.name,
        config = %config.path.display(),
        actors = status.actors.len(),
        providers = status.providers.len(),
        links = status.links,
        admin = ?running.admin_address,
        "host ready"
    );
    wait_for_signal().await;
    let left = running.shutdown().await;
    if left > 0 {
        tracing::warn!(abandoned = left, "stopped with invocations still running");
    }
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot listen for signals; stopping");
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = int.recv() => tracing::info!("SIGINT: shutting down"),
    }
}
