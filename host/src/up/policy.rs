//! The policy of `sigil up`, built from `[policy]`: Rego files checked before anything
//! starts (and watched for changes), and the decision service connected.

use std::sync::Arc;

use super::config::{ConfigError, HostConfig};
use crate::policy::rego::{RegoError, RegoPolicy};
use crate::policy::service::PolicyService;
use crate::policy::{Enforcer, HostInfo, PolicyChain, PolicyDecider};

/// The enforcer `config` asks for, or `None` when it names no Rego files and no service.
/// A Rego file that does not compile is reported with its own file and line.
pub async fn enforcer(config: &HostConfig) -> Result<Option<Enforcer>, ConfigError> {
    let control = &config.policy_control;
    let mut deciders: Vec<Arc<dyn PolicyDecider>> = Vec::new();
    if !control.rego.is_empty() {
        let rego = RegoPolicy::load(&control.rego).map_err(|e| rego_error(config, e))?;
        let rego = Arc::new(rego);
        if let Some(every) = control.reload {
            rego.watch(every).map_err(|e| {
                config.error_for(
                    "policy.reload",
                    format!("cannot start the policy file watcher: {e}"),
                )
            })?;
        }
        tracing::info!(
            files = ?control.rego,
            points = ?rego.points(),
            reload = ?control.reload,
            "Rego policy loaded"
        );
        deciders.push(rego);
    }
    if let Some(s) = &control.service {
        let service = PolicyService::connect(&s.nats, s.subject.clone(), s.timeout)
            .await
            .map_err(|e| {
                config.error_for(
                    "policy.service.nats",
                    format!(
                        "[policy.service] nats = {:?}: {e}; the host does not start without \
                         its policy service (start NATS or fix the url)",
                        s.nats
                    ),
                )
            })?
            .cache_for(s.cache);
        tracing::info!(nats = %s.nats, subject = %s.subject, timeout = ?s.timeout, "policy service");
        deciders.push(Arc::new(service));
    }
    let decider: Arc<dyn PolicyDecider> = match deciders.len() {
        0 => return Ok(None),
        1 => deciders.remove(0),
        _ => Arc::new(PolicyChain::new(deciders)),
    };
    Ok(Some(Enforcer::new(
        decider,
        HostInfo {
            name: config.name.clone(),
            labels: config.labels.clone(),
        },
    )))
}

fn rego_error(config: &HostConfig, e: RegoError) -> ConfigError {
    match e {
        RegoError::Invalid {
            path,
            line,
            message,
        } => ConfigError {
            path,
            line,
            message: format!(
                "the Rego policy does not compile, so the host does not start: {message}"
            ),
        },
        RegoError::Read { ref path, .. } => {
            let key = config
                .policy_control
                .rego
                .iter()
                .position(|p| p == path)
                .map_or_else(
                    || "policy.rego".to_string(),
                    |i| format!("policy.rego[{i}]"),
                );
            config.error_for(&key, format!("[policy] rego: {e}; fix the path"))
        }
        other => config.error_for("policy.rego", format!("[policy] rego: {other}")),
    }
}
