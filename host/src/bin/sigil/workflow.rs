//! `sigil workflow`: run workflows, follow them, cancel them.

use std::collections::{BTreeMap, HashMap};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use serde_json::Value;
use sigil_host::up::HostConfig;
use sigil_host::up::config::WorkflowBackendSpec;
use sigil_host::up::workflows::{Backend, NoRunner};
use sigil_host::workflow::routes::resolve_routes;
use sigil_host::workflow::scheduler::{Scheduler, SchedulerConfig};
use sigil_host::workflow::spec::Workflow;
use sigil_host::workflow::state::{RunState, RunStatus, StepStatus};

/// The run ended without succeeding (exit code 1).
#[derive(Debug, thiserror::Error)]
#[error("run {id} {status}: {reason}")]
pub(crate) struct RunFailed {
    id: String,
    status: &'static str,
    reason: String,
}

#[derive(Subcommand, Debug)]
pub(crate) enum WorkflowCommand {
    /// Start a run of a workflow spec. Without NATS, the run happens in this process, on
    /// the actors the spec names (by file) and those of --config.
    Run(RunArgs),
    /// Show a run's state.
    Status(RunRef),
    /// Cancel a run: steps not started yet will not start.
    Cancel(RunRef),
}

#[derive(Args, Debug)]
pub(crate) struct Target {
    /// A host configuration: its providers, links and actors (in-process runs), or its
    /// [workflows] NATS settings.
    #[arg(long, short, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Use the hosts sharing this NATS server (overrides the configuration).
    #[arg(long, value_name = "URL")]
    nats: Option<String>,
}

#[derive(Args, Debug)]
pub(crate) struct RunArgs {
    /// The workflow spec (YAML).
    file: PathBuf,
    /// An input, as NAME=VALUE; VALUE is read as JSON when it parses, else as text.
    #[arg(long = "input", short = 'i', value_name = "NAME=VALUE")]
    inputs: Vec<String>,
    /// Wait for the run to end, showing its progress (always so for in-process runs).
    #[arg(long)]
    wait: bool,
    /// Print the run's state as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    target: Target,
    #[command(flatten)]
    registry: crate::RegistryArgs,
}

#[derive(Args, Debug)]
pub(crate) struct RunRef {
    /// The run ID.
    run: String,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    target: Target,
}

pub(crate) fn workflow(command: WorkflowCommand, cache_dir: Option<PathBuf>) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("sigil")
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        match command {
            WorkflowCommand::Run(a) => run(a, cache_dir).await,
            WorkflowCommand::Status(r) => {
                let scheduler = remote(&r.target).await?;
                let state = scheduler.status(&r.run).await?;
                print_state(&state, r.json)?;
                verdict(&state)
            }
            WorkflowCommand::Cancel(r) => {
                let scheduler = remote(&r.target).await?;
                let state = scheduler.cancel(&r.run).await?;
                print_state(&state, r.json)
            }
        }
    })
}

fn load_config(target: &Target) -> Result<HostConfig> {
    let mut config = match &target.config {
        Some(path) => HostConfig::load(path)?,
        None => HostConfig::parse(Path::new("(defaults)"), "")?,
    };
    if let Some(url) = &target.nats {
        config.workflows.backend = WorkflowBackendSpec::Nats { url: url.clone() };
    }
    // A CLI run serves no admin endpoint.
    config.admin_address = None;
    Ok(config)
}

/// A scheduler that talks to the hosts over NATS and runs nothing itself.
async fn remote(target: &Target) -> Result<Arc<Scheduler>> {
    let config = load_config(target)?;
    if config.workflows.backend == WorkflowBackendSpec::Memory {
        bail!(
            "runs of the in-process backend live only in the process that ran them; pass \
             --nats URL, or --config with a [workflows] nats setting"
        );
    }
    let backend = Backend::connect(&config.workflows)
        .await
        .map_err(anyhow::Error::msg)?;
    Ok(backend.scheduler(Arc::new(NoRunner), SchedulerConfig::default()))
}

fn parse_inputs(inputs: &[String]) -> Result<BTreeMap<String, Value>> {
    let mut out = BTreeMap::new();
    for i in inputs {
        let Some((name, value)) = i.split_once('=') else {
            bail!("--input {i:?}: write it as NAME=VALUE");
        };
        let value = serde_json::from_str(value).unwrap_or_else(|_| Value::String(value.into()));
        out.insert(name.trim().to_string(), value);
    }
    Ok(out)
}

async fn run(a: RunArgs, cache_dir: Option<PathBuf>) -> Result<()> {
    let mut config = load_config(&a.target)?;
    if config.engine.cache_dir.is_none() {
        config.engine.cache_dir = cache_dir;
    }
    let workflow = Workflow::from_file(&a.file)?;
    let inputs = parse_inputs(&a.inputs)?;
    let base = a.file.parent().unwrap_or(Path::new(".")).to_path_buf();
    a.registry.apply(&mut config.registry);
    let registry = sigil_host::up::module_registry(&config)?;
    let mut files = Vec::new();
    let routes: HashMap<String, String> = resolve_routes(
        &workflow,
        &base,
        &config.policy,
        Some(&registry),
        |origin, bytes| {
            files.push((origin.to_string(), bytes));
            Ok(())
        },
    )
    .await?;
    let mut progress = Progress::new(a.json);
    if config.workflows.backend != WorkflowBackendSpec::Memory {
        let scheduler = remote(&a.target).await?;
        let id = scheduler.submit(&workflow, inputs, &routes).await?;
        if !a.wait {
            if a.json {
                println!("{}", serde_json::json!({ "run": id }));
            } else {
                println!("{id}");
            }
            return Ok(());
        }
        let state = scheduler.wait(&id, |s| progress.show(s)).await?;
        progress.done();
        print_state(&state, a.json)?;
        return verdict(&state);
    }
    let running = sigil_host::up::start_with(&config, files).await?;
    let scheduler = running.workflows.scheduler.clone();
    let outcome = async {
        let id = scheduler.submit(&workflow, inputs, &routes).await?;
        let state = scheduler.wait(&id, |s| progress.show(s)).await?;
        anyhow::Ok(state)
    }
    .await;
    running.shutdown().await;
    let state = outcome?;
    progress.done();
    print_state(&state, a.json)?;
    verdict(&state)
}

fn verdict(state: &RunState) -> Result<()> {
    let status = match state.status {
        RunStatus::Succeeded | RunStatus::Running => return Ok(()),
        RunStatus::Failed => "failed",
        RunStatus::Cancelled => "was cancelled",
    };
    Err(RunFailed {
        id: state.id.clone(),
        status,
        reason: state.error.clone().unwrap_or_default(),
    }
    .into())
}

fn status_word(s: StepStatus) -> &'static str {
    match s {
        StepStatus::Pending => "pending",
        StepStatus::Queued => "queued",
        StepStatus::Running => "running",
        StepStatus::Retrying => "retrying",
        StepStatus::Succeeded => "succeeded",
        StepStatus::Failed => "failed",
        StepStatus::Skipped => "skipped",
        StepStatus::Cancelled => "cancelled",
    }
}

fn run_word(s: RunStatus) -> &'static str {
    match s {
        RunStatus::Running => "running",
        RunStatus::Succeeded => "succeeded",
        RunStatus::Failed => "failed",
        RunStatus::Cancelled => "cancelled",
    }
}

/// One line per step: status, attempts, host, time.
fn step_line(name: &str, state: &RunState) -> String {
    let s = &state.steps[name];
    let mut line = format!("{name:<16} {:<10}", status_word(s.status));
    if s.attempts > 1 {
        line.push_str(&format!(" attempt {}", s.attempts));
    }
    if let Some(host) = &s.host {
        line.push_str(&format!(" on {host}"));
    }
    if let (Some(a), Some(b)) = (s.started_ms, s.finished_ms) {
        line.push_str(&format!(" {} ms", b.saturating_sub(a)));
    }
    if matches!(s.status, StepStatus::Failed | StepStatus::Retrying)
        && let Some(e) = &s.error
    {
        line.push_str(&format!(": {}", e.lines().next().unwrap_or_default()));
    }
    line
}

/// The live view: a redrawn table on a terminal, a line per change otherwise.
struct Progress {
    quiet: bool,
    terminal: bool,
    drawn: usize,
    seen: HashMap<String, String>,
}

impl Progress {
    fn new(quiet: bool) -> Self {
        Progress {
            quiet,
            terminal: std::io::stderr().is_terminal(),
            drawn: 0,
            seen: HashMap::new(),
        }
    }

    fn show(&mut self, state: &RunState) {
        if self.quiet {
            return;
        }
        let order = state.step_order();
        let mut err = std::io::stderr().lock();
        if self.terminal {
            if self.drawn > 0 {
                let _ = write!(err, "\x1b[{}A\x1b[J", self.drawn);
            }
            let _ = writeln!(
                err,
                "run {} ({}): {}",
                state.id,
                state.workflow,
                run_word(state.status)
            );
            for name in &order {
                let _ = writeln!(err, "  {}", step_line(name, state));
            }
            self.drawn = order.len() + 1;
        } else {
            for name in order {
                let line = step_line(name, state);
                if self.seen.get(name.as_str()) != Some(&line) {
                    let _ = writeln!(err, "step {line}");
                    self.seen.insert(name.clone(), line);
                }
            }
        }
    }

    fn done(&mut self) {
        self.drawn = 0;
    }
}

fn print_state(state: &RunState, json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(state)?);
        return Ok(());
    }
    let took = state
        .finished_ms
        .map(|f| format!(" in {} ms", f.saturating_sub(state.created_ms)))
        .unwrap_or_default();
    println!(
        "run {} of {}: {}{took}",
        state.id,
        state.workflow,
        run_word(state.status)
    );
    if let Some(e) = &state.error {
        println!("error: {e}");
    }
    if let Some(outputs) = &state.outputs {
        println!("{}", serde_json::to_string_pretty(outputs)?);
    }
    Ok(())
}
