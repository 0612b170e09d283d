//! `sigil lattice ...`: the control interface of a lattice, from the command line.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use futures::StreamExt;
use sigil_host::up::control::{Command, ControlClient, HostInfo, link};
use sigil_providers::LinkConfig;

/// Steer the hosts of a lattice: list them, start, update, scale and stop actors, add and
/// remove links, and watch their events. Requests are signed with the lattice's cluster
/// key.
#[derive(Subcommand, Debug)]
pub(crate) enum LatticeCommand {
    /// List the hosts that answer, with their labels, uptime, actors and providers.
    Hosts(Common),
    /// Start a signed actor module on a host.
    Start(ModuleArgs),
    /// Replace a running actor with a newer signed revision, without dropping
    /// invocations (a revision not newer than the running one is refused).
    Update(ModuleArgs),
    /// Stop an actor on a host (its links go too).
    Stop(ActorArgs),
    /// Limit how many invocations of an actor run at once on a host (0: no limit).
    Scale(ScaleArgs),
    /// Add a link on a host.
    Link(LinkArgs),
    /// Remove a link on a host.
    Unlink(UnlinkArgs),
    /// Print the hosts' events (heartbeats, actors and links changing) as they come.
    Events(Common),
}

/// How to reach the lattice.
#[derive(Args, Debug)]
pub(crate) struct Common {
    /// The NATS server.
    #[arg(long, env = "SIGIL_NATS_URL", default_value = "nats://127.0.0.1:4222")]
    nats: String,
    /// The lattice name.
    #[arg(long, env = "SIGIL_LATTICE", default_value = "default")]
    lattice: String,
    /// The cluster seed file (SC...); or set SIGIL_CLUSTER_SEED.
    #[arg(long, value_name = "FILE")]
    cluster_seed_file: Option<PathBuf>,
    /// How long to wait for answers.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    wait: Duration,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// A host and a module.
#[derive(Args, Debug)]
pub(crate) struct ModuleArgs {
    #[command(flatten)]
    common: Common,
    /// The host's ID (N..., from `sigil lattice hosts`) or its unique name.
    #[arg(long)]
    host: String,
    /// The signed actor module: a .wasm file (sent in the request), or an
    /// oci://REGISTRY/REPOSITORY:TAG reference, resolved here to its digest, which the
    /// host pulls.
    module: String,
    #[command(flatten)]
    registry: crate::RegistryArgs,
}

impl ModuleArgs {
    /// The module as a command's parts: a reference (pinned to its digest when the
    /// registry answers here), or the file's bytes.
    async fn module(&self) -> Result<(Option<String>, Vec<u8>)> {
        if !sigil_host::oci::ModuleRef::is_reference(&self.module) {
            let bytes = std::fs::read(&self.module)
                .with_context(|| format!("cannot read {}", self.module))?;
            return Ok((None, bytes));
        }
        let reference = sigil_host::oci::ModuleRef::parse(&self.module)?;
        let registry = self.registry.registry(None)?;
        registry.check_pinning(&reference)?;
        let resolved = registry.resolve(&reference).await;
        match resolved {
            Ok(pinned) => Ok((Some(pinned.to_string()), Vec::new())),
            Err(e @ sigil_host::oci::RegistryError::Unreachable { .. }) => {
                eprintln!(
                    "warning: {e}\nsending {reference} unresolved: each host resolves the tag \
                     itself"
                );
                Ok((Some(reference.to_string()), Vec::new()))
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// A host and an actor.
#[derive(Args, Debug)]
pub(crate) struct ActorArgs {
    #[command(flatten)]
    common: Common,
    /// The host's ID or unique name.
    #[arg(long)]
    host: String,
    /// The actor's public key, call alias or name.
    actor: String,
}

/// A host, an actor and a limit.
#[derive(Args, Debug)]
pub(crate) struct ScaleArgs {
    #[command(flatten)]
    common: Common,
    /// The host's ID or unique name.
    #[arg(long)]
    host: String,
    /// The actor's public key, call alias or name.
    actor: String,
    /// Invocations at once (0: no limit of its own).
    max_concurrent: usize,
}

/// A link to add.
#[derive(Args, Debug)]
pub(crate) struct LinkArgs {
    #[command(flatten)]
    common: Common,
    /// The host's ID or unique name.
    #[arg(long)]
    host: String,
    /// The actor.
    actor: String,
    /// The contract (ID or alias, e.g. keyvalue).
    contract: String,
    /// The provider instance on the host.
    provider: String,
    /// The link name.
    #[arg(long, default_value = "default")]
    name: String,
    /// Link configuration as KEY=VALUE (repeat).
    #[arg(long = "config", value_name = "KEY=VALUE")]
    config: Vec<String>,
}

/// A link to remove.
#[derive(Args, Debug)]
pub(crate) struct UnlinkArgs {
    #[command(flatten)]
    common: Common,
    /// The host's ID or unique name.
    #[arg(long)]
    host: String,
    /// The actor.
    actor: String,
    /// The contract (ID or alias).
    contract: String,
    /// The link name.
    #[arg(long, default_value = "default")]
    name: String,
}

/// Runs a `sigil lattice` command.
pub(crate) fn lattice(command: LatticeCommand) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(run(command))
}

async fn connect(common: &Common) -> Result<ControlClient> {
    let seed = match (
        &common.cluster_seed_file,
        std::env::var("SIGIL_CLUSTER_SEED"),
    ) {
        (Some(file), _) => std::fs::read_to_string(file)
            .with_context(|| format!("cannot read {}", file.display()))?,
        (None, Ok(seed)) if !seed.trim().is_empty() => seed,
        _ => {
            bail!("give the lattice's cluster seed: --cluster-seed-file FILE or SIGIL_CLUSTER_SEED")
        }
    };
    let cluster = nkeys::KeyPair::from_seed(seed.trim())
        .map_err(|e| anyhow::anyhow!("the cluster seed is not valid: {e}"))?;
    let client = async_nats::connect(&common.nats)
        .await
        .with_context(|| format!("cannot connect to NATS at {}", common.nats))?;
    ControlClient::new(client, &common.lattice, cluster, &[]).map_err(anyhow::Error::msg)
}

/// The ID of the host named `host` (an ID, or a name only one host has).
async fn host_id(client: &ControlClient, common: &Common, host: &str) -> Result<String> {
    if host.starts_with('N') && host.len() == 56 {
        return Ok(host.to_string());
    }
    let hosts = client
        .hosts(common.wait)
        .await
        .map_err(anyhow::Error::msg)?;
    let named: Vec<&HostInfo> = hosts.iter().filter(|h| h.name == host).collect();
    match named.as_slice() {
        [one] => Ok(one.id.clone()),
        [] => bail!(
            "no host named {host} answered on lattice {}",
            common.lattice
        ),
        _ => bail!("{} hosts are named {host}; give a host ID", named.len()),
    }
}

async fn send(common: &Common, host: &str, command: Command, body: Vec<u8>) -> Result<()> {
    let client = connect(common).await?;
    let id = host_id(&client, common, host).await?;
    let answer = client
        .command(
            &id,
            &command,
            body,
            // Starting pulls and compiles the module: allow for that.
            common.wait.max(match command {
                Command::StartActor { .. } | Command::UpdateActor { .. } => Duration::from_secs(60),
                _ => Duration::from_secs(10),
            }),
        )
        .await
        .map_err(anyhow::Error::msg)?;
    if common.json {
        println!("{answer}");
    } else {
        println!("ok: {answer}");
    }
    Ok(())
}

async fn run(command: LatticeCommand) -> Result<()> {
    match command {
        LatticeCommand::Hosts(common) => {
            let client = connect(&common).await?;
            let hosts = client
                .hosts(common.wait)
                .await
                .map_err(anyhow::Error::msg)?;
            if common.json {
                println!("{}", serde_json::to_string_pretty(&hosts)?);
                return Ok(());
            }
            if hosts.is_empty() {
                println!("no host answered on lattice {}", common.lattice);
            }
            for h in hosts {
                let labels: Vec<String> =
                    h.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
                println!(
                    "{} {}  up {}s  in flight {}{}  [{}]",
                    h.name,
                    h.id,
                    h.uptime_ms / 1000,
                    h.in_flight,
                    if h.draining { "  draining" } else { "" },
                    labels.join(", ")
                );
                for a in &h.actors {
                    println!(
                        "  actor    {} {} rev {}{}{}{}",
                        a.name,
                        a.subject,
                        a.rev.unwrap_or(0),
                        a.call_alias
                            .as_deref()
                            .map(|c| format!(" alias {c}"))
                            .unwrap_or_default(),
                        a.max_concurrent
                            .map(|m| format!(" max {m}"))
                            .unwrap_or_default(),
                        a.module
                            .as_deref()
                            .map(|m| format!("\n           module {m}"))
                            .unwrap_or_default()
                    );
                }
                for p in &h.providers {
                    println!(
                        "  provider {} ({}, {}) {} links{}",
                        p.name,
                        p.kind,
                        p.contract,
                        p.links,
                        if p.healthy { "" } else { "  UNHEALTHY" }
                    );
                }
            }
            Ok(())
        }
        LatticeCommand::Start(a) => {
            let (reference, bytes) = a.module().await?;
            send(&a.common, &a.host, Command::StartActor { reference }, bytes).await
        }
        LatticeCommand::Update(a) => {
            let (reference, bytes) = a.module().await?;
            send(
                &a.common,
                &a.host,
                Command::UpdateActor { reference },
                bytes,
            )
            .await
        }
        LatticeCommand::Stop(a) => {
            send(
                &a.common,
                &a.host,
                Command::StopActor { actor: a.actor },
                Vec::new(),
            )
            .await
        }
        LatticeCommand::Scale(a) => {
            let command = Command::ScaleActor {
                actor: a.actor,
                max_concurrent: a.max_concurrent,
            };
            send(&a.common, &a.host, command, Vec::new()).await
        }
        LatticeCommand::Link(a) => {
            let mut config = LinkConfig::new();
            for pair in &a.config {
                let (k, v) = pair
                    .split_once('=')
                    .with_context(|| format!("--config {pair:?} is not KEY=VALUE"))?;
                config = config.with(k.trim(), v.trim());
            }
            let mut definition = link(&a.actor, &a.contract, &a.provider, config);
            definition.link_name = a.name;
            send(
                &a.common,
                &a.host,
                Command::PutLink { link: definition },
                Vec::new(),
            )
            .await
        }
        LatticeCommand::Unlink(a) => {
            let command = Command::DelLink {
                actor: a.actor,
                contract: a.contract,
                name: a.name,
            };
            send(&a.common, &a.host, command, Vec::new()).await
        }
        LatticeCommand::Events(common) => {
            let client = connect(&common).await?;
            let mut events = Box::pin(client.events().await.map_err(anyhow::Error::msg)?);
            while let Some(e) = events.next().await {
                if common.json {
                    println!("{}", serde_json::to_string(&e)?);
                } else {
                    println!("{} {} {} {}", e.at_ms, e.host_name, e.kind, e.detail);
                }
            }
            Ok(())
        }
    }
}
