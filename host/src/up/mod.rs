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
use std::sync::Arc;
use std::time::Duration;

pub use builtin::{Builtins, create_provider};
pub use config::{ConfigError, HostConfig};
pub use metrics::Metrics;
pub use runtime::{HostStatus, Runtime, RuntimeError, RuntimeLinkError};

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
    admin: Option<ServerHandle>,
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

/// [`start`], loading `extra_actors` (module bytes, with the path they came from) after
/// the configuration's own.
pub async fn start_with(
    config: &HostConfig,
    extra_actors: Vec<(std::path::PathBuf, Vec<u8>)>,
) -> Result<Running, ConfigError> {
    let enforcer = policy::enforcer(config).await?;
    let runtime = Runtime::with_enforcer(config.engine.clone(), config.policy.clone(), enforcer)
        .map_err(|e| config.error_at(0, format!("cannot start the engine: {e}")))?;

    for actor in &config.actors {
        let path = &actor.value;
        let bytes = tokio::fs::read(path).await.map_err(|e| {
            config.error_at(
                actor.line,
                format!(
                    "cannot read actor {}: {e}; build it first or fix the path",
                    path.display()
                ),
            )
        })?;
        runtime.load_actor(bytes).await.map_err(|e| {
            config.error_at(actor.line, format!("actor {} refused: {e}", path.display()))
        })?;
    }

    for (path, bytes) in extra_actors {
        runtime
            .load_actor(bytes)
            .await
            .map_err(|e| config.error_at(0, format!("actor {} refused: {e}", path.display())))?;
    }

    let mut builtins = Builtins::default();
    if let Some(l) = &config.lattice {
        let cluster = nkeys::KeyPair::from_seed(&l.cluster_seed)
            .map_err(|e| config.error_at(0, format!("the cluster seed: {e}")))?;
        tracing::info!(lattice = %l.name, cluster = %cluster.public_key(), "joining the lattice");
        let lattice =
            sigil_providers::plugin::Lattice::new(&l.nats, &l.name, cluster, config.policy.clone());
        // The actors loaded above take calls from the lattice; later ones join as loaded.
        runtime
            .join_lattice(lattice.clone(), &l.cluster_issuers)
            .await
            .map_err(|e| config.error_at(0, format!("cannot join lattice {}: {e}", l.name)))?;
        builtins.lattice = Some(lattice);
    }
    for spec in &config.providers {
        let p = &spec.value;
        let provider = create_provider(&p.kind, &p.config, &builtins).map_err(|e| {
            config.error_at(
                spec.line,
                format!("provider {:?} ({}): {e}", p.name, p.kind),
            )
        })?;
        runtime
            .add_provider(&p.name, provider)
            .await
            .map_err(|e| config.error_at(spec.line, e.to_string()))?;
    }

    for link in &config.links {
        runtime
            .add_link(&link.value)
            .await
            .map_err(|e| config.error_at(link.line, e.to_string()))?;
    }

    let workflows = workflows::start(&runtime, config, &builtins.bus).await?;

    let (admin, admin_address) = match &config.admin_address {
        None => (None, None),
        Some(address) => {
            let handle = admin::serve_config(
                runtime.clone(),
                config,
                address,
                workflows.scheduler.clone(),
            )
            .await
            .map_err(|e| {
                config.error_at(
                    0,
                    format!(
                        "cannot serve the admin endpoint on {address}: {e}; pick another \
                             admin_address or \"off\""
                    ),
                )
            })?;
            let bound = handle.local_addr();
            (Some(handle), Some(bound))
        }
    };

    let (argo, argo_address) = match &config.argo {
        None => (None, None),
        Some(a) => {
            let handle = argo::serve_argo(
                workflows.scheduler.clone(),
                a.token.clone(),
                a.artifacts.clone(),
                &a.address,
            )
            .await
            .map_err(|e| {
                config.error_at(
                    0,
                    format!(
                        "cannot serve the Argo plugin endpoint on {}: {e}",
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
            .map_err(|e| config.error_at(0, format!("cannot serve the control interface: {e}")))?,
        ),
        _ => None,
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
