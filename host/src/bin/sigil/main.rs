//! `sigil`: run signed actors.
//!
//! Exit codes: 0 success; 1 the actor or module was refused or failed (verification, limits,
//! traps, actor errors); 2 usage, configuration or I/O errors.

mod lattice;
mod workflow;

use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use sigil_claims::{KeyKind, KeySource, KeyStore, Policy, display, keys};
use sigil_host::build::{BuildOptions, DEFAULT_STACK_SIZE};
use sigil_host::{EngineConfig, Host, InvocationError, Limits, LoadError};

/// Run signed WebAssembly actors.
#[derive(Parser, Debug)]
#[command(name = "sigil", version, about, long_about = None)]
#[command(
    after_help = "Exit codes: 0 ok, 1 refused or failed, 2 usage, configuration or I/O error.\n\
                        Logs: SIGIL_LOG=debug (tracing filter syntax)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Invoke one operation of a signed actor module and print the response.
    Call(CallArgs),
    /// Show the signed claims of a module.
    Inspect(InspectArgs),
    /// Push a signed module to an OCI registry (a manifest with one Wasm layer).
    Push(PushArgs),
    /// Pull a module from an OCI registry, check it, and write it to a file.
    Pull(PullArgs),
    /// Build actor crates for wasm32 and sign them.
    Build(BuildArgs),
    /// Run a long-lived host from a configuration file: actors, providers, links, a health
    /// and metrics endpoint; SIGINT or SIGTERM drains it.
    Up(UpArgs),
    /// Run workflows of signed steps, and follow or cancel their runs.
    #[command(subcommand)]
    Workflow(workflow::WorkflowCommand),
    /// Run a built-in provider as a provider plugin: its own process, serving hosts over
    /// the lattice (see docs/provider-plugins.md).
    #[command(subcommand)]
    Provider(ProviderCommand),
    /// Steer the hosts of a lattice over NATS: list them, start, update, scale and stop
    /// actors, change links, watch events.
    #[command(subcommand)]
    Lattice(lattice::LatticeCommand),
}

#[derive(Subcommand, Debug)]
enum ProviderCommand {
    /// Serve one built-in provider kind as a plugin until SIGINT or SIGTERM. Its identity
    /// comes from the environment: SIGIL_PROVIDER_SEED (or _FILE), SIGIL_PROVIDER_CLAIMS,
    /// SIGIL_CLUSTER_ISSUERS, SIGIL_NATS_URL and SIGIL_LATTICE.
    Run(ProviderRunArgs),
}

#[derive(Args, Debug)]
struct ProviderRunArgs {
    /// The built-in kind, e.g. keyvalue-redis or keyvalue-memory.
    kind: String,
    /// Provider configuration as KEY=VALUE (repeat), as in a [[providers]] config table.
    #[arg(long = "config", value_name = "KEY=VALUE")]
    config: Vec<String>,
}

#[derive(Args, Debug)]
struct UpArgs {
    /// The host configuration (TOML); see docs/operations.md.
    #[arg(long, short, value_name = "FILE", default_value = "host.toml")]
    config: PathBuf,
    /// Check the configuration, the actors, the policies, the providers' settings, the
    /// links and that the backends answer, then exit; binds no port, so it can run beside
    /// the host it checks.
    #[arg(long)]
    check: bool,
}

/// How one-off commands reach registries (besides `SIGIL_REGISTRY*` and Docker's
/// `config.json`).
#[derive(Args, Debug, Clone, Default)]
pub(crate) struct RegistryArgs {
    /// Reach this registry (HOST[:PORT]) over plain HTTP; repeat for more. Also
    /// SIGIL_REGISTRY_INSECURE (comma-separated).
    #[arg(long = "insecure-registry", value_name = "HOST")]
    insecure_registry: Vec<String>,
    /// Accept references with the tag `latest` or no tag (what they name changes with
    /// every push).
    #[arg(long)]
    allow_latest: bool,
}

impl RegistryArgs {
    /// Adds these options to a host configuration's.
    pub(crate) fn apply(&self, options: &mut sigil_host::oci::RegistryOptions) {
        options
            .insecure
            .extend(self.insecure_registry.iter().cloned());
        options.allow_latest |= self.allow_latest;
    }

    /// The registry client for these options, caching pulled modules under `cache`
    /// (`oci/` in it).
    pub(crate) fn registry(
        &self,
        cache: Option<&Path>,
    ) -> Result<std::sync::Arc<sigil_host::oci::Registry>> {
        let options = sigil_host::oci::RegistryOptions {
            insecure: self.insecure_registry.clone(),
            allow_latest: self.allow_latest,
            cache_dir: cache.map(|c| c.join("oci")),
            ..Default::default()
        }
        .with_env();
        Ok(sigil_host::oci::Registry::new(options)?)
    }
}

#[derive(Args, Debug)]
struct PushArgs {
    /// The signed module (.wasm).
    module: PathBuf,
    /// Where to push it: oci://REGISTRY/REPOSITORY:TAG.
    reference: String,
    #[command(flatten)]
    registry: RegistryArgs,
}

#[derive(Args, Debug)]
struct PullArgs {
    /// The module: oci://REGISTRY/REPOSITORY:TAG or ...@sha256:DIGEST.
    reference: String,
    /// Where to write it (default: the repository's last part, .wasm, here).
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// Accept modules signed only by this account (repeat). Default: any issuer.
    #[arg(long = "issuer", value_name = "ACCOUNT_KEY")]
    issuers: Vec<String>,
    #[command(flatten)]
    registry: RegistryArgs,
}

#[derive(Args, Debug)]
struct CallArgs {
    /// The signed actor module: a .wasm file or oci://REGISTRY/REPOSITORY:TAG.
    module: String,
    /// The operation to invoke.
    operation: String,
    /// The request as JSON (sent to the actor as MessagePack), or text with --raw.
    #[arg(long, conflicts_with = "data_file")]
    data: Option<String>,
    /// Read the request from a file (`-` for standard input); JSON unless --raw.
    #[arg(long, value_name = "FILE")]
    data_file: Option<PathBuf>,
    /// Send the request bytes as they are instead of converting JSON to MessagePack.
    #[arg(long)]
    raw: bool,
    /// Print the response bytes as they are instead of decoding MessagePack to JSON.
    #[arg(long)]
    raw_output: bool,
    /// Accept modules signed only by this account (repeat). Default: any issuer.
    #[arg(long = "issuer", value_name = "ACCOUNT_KEY")]
    issuers: Vec<String>,
    #[command(flatten)]
    limits: LimitArgs,
    /// Compiled-module cache directory (default: $SIGIL_CACHE_DIR, else ~/.cache/sigil).
    #[arg(long, value_name = "DIR", conflicts_with = "no_cache")]
    cache_dir: Option<PathBuf>,
    /// Do not cache compiled modules.
    #[arg(long)]
    no_cache: bool,
    #[command(flatten)]
    registry: RegistryArgs,
}

#[derive(Args, Debug)]
struct LimitArgs {
    /// Wall-clock deadline of the invocation, e.g. 500ms, 10s.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    deadline: Option<Duration>,
    /// Fuel for the invocation (off by default).
    #[arg(long)]
    fuel: Option<u64>,
    /// Linear memory ceiling in bytes (suffixes k, M, G allowed).
    #[arg(long, value_name = "BYTES", value_parser = parse_bytes)]
    max_memory: Option<usize>,
    /// Largest response accepted, in bytes (suffixes k, M, G allowed).
    #[arg(long, value_name = "BYTES", value_parser = parse_bytes)]
    max_response: Option<usize>,
}

#[derive(Args, Debug)]
struct InspectArgs {
    /// The module: a file, or oci://REGISTRY/REPOSITORY:TAG.
    module: String,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    registry: RegistryArgs,
}

#[derive(Args, Debug)]
struct BuildArgs {
    /// Actor crates or workspaces of them (default: the current directory).
    paths: Vec<PathBuf>,
    /// Where to write the signed modules (default: build/ in each workspace root).
    #[arg(short, long, value_name = "DIR")]
    out_dir: Option<PathBuf>,
    /// The signing account: a seed file, env:VAR, or a key name. Default: the stored
    /// `default` account, created on first use.
    #[arg(long, value_name = "KEY")]
    issuer: Option<String>,
    /// Key directory (default: $SIGIL_KEYS, else ~/.sigil/keys).
    #[arg(long, value_name = "DIR")]
    keys: Option<PathBuf>,
    /// The actors' linear-memory stack size in bytes.
    #[arg(long, default_value_t = DEFAULT_STACK_SIZE, value_name = "BYTES", value_parser = parse_bytes)]
    stack_size: usize,
    /// Require Cargo.lock to be up to date.
    #[arg(long)]
    locked: bool,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (examples: 250ms, 10s, 1m)"))
}

fn parse_bytes(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let (digits, mult) = match t.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        None => (t, 1usize),
        Some((i, _)) => {
            let mult = match t[i..].trim().to_ascii_lowercase().as_str() {
                "k" | "kb" | "kib" => 1 << 10,
                "m" | "mb" | "mib" => 1 << 20,
                "g" | "gb" | "gib" => 1 << 30,
                other => return Err(format!("unknown unit {other:?} (use k, M or G)")),
            };
            (&t[..i], mult)
        }
    };
    digits
        .parse::<usize>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| format!("{s:?} is not a size in bytes"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Trace export is set up with logging, so `sigil up` reads its file's [telemetry] here
    // (the file's other errors are reported when it is loaded).
    let loaded = match &cli.command {
        Command::Up(args) => Some(sigil_host::up::HostConfig::load(&args.config)),
        _ => None,
    };
    let table = loaded
        .as_ref()
        .and_then(|c| c.as_ref().ok())
        .and_then(|c| c.telemetry.clone());
    let telemetry =
        match sigil_host::telemetry::settings(table.as_ref(), &|k| std::env::var(k).ok()) {
            Ok(settings) => settings,
            Err(e) => {
                eprintln!("error: telemetry: {e}");
                return ExitCode::from(2);
            }
        };
    let telemetry = match init_logging(
        if matches!(cli.command, Command::Up(_) | Command::Provider(_)) {
            "info"
        } else {
            "warn,sigil::actor=info"
        },
        telemetry.as_ref(),
    ) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: telemetry: {e}");
            return ExitCode::from(2);
        }
    };
    let outcome = run(cli, loaded);
    if let Some(t) = &telemetry {
        t.shutdown();
    }
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            let refused = err.chain().any(|e| {
                e.is::<InvocationError>()
                    || e.is::<workflow::RunFailed>()
                    || matches!(e.downcast_ref::<LoadError>(), Some(l) if is_refusal(l))
                    || e.downcast_ref::<sigil_host::oci::RegistryError>()
                        .is_some_and(sigil_host::oci::RegistryError::is_refusal)
                    || e.downcast_ref::<sigil_claims::Error>()
                        .is_some_and(sigil_claims::Error::is_verification_failure)
            });
            ExitCode::from(if refused { 1 } else { 2 })
        }
    }
}

fn is_refusal(e: &LoadError) -> bool {
    match e {
        LoadError::Claims(c) => c.is_verification_failure(),
        LoadError::Io { .. } | LoadError::Engine { .. } => false,
        _ => true,
    }
}

/// Logs to stderr, filtered by `SIGIL_LOG`; with telemetry, also spans to OTLP (Sigil's
/// own spans, whatever `SIGIL_LOG` says: the two filters are separate).
fn init_logging(
    default_filter: &str,
    telemetry: Option<&sigil_host::telemetry::TelemetrySettings>,
) -> std::result::Result<Option<sigil_host::telemetry::Telemetry>, String> {
    use tracing_subscriber::Layer;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = tracing_subscriber::EnvFilter::try_from_env("SIGIL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .with_filter(filter);
    let Some(settings) = telemetry else {
        let _ = tracing_subscriber::registry().with(fmt).try_init();
        return Ok(None);
    };
    let (telemetry, tracer) = sigil_host::telemetry::Telemetry::start(settings)?;
    let spans = tracing_subscriber::filter::Targets::new()
        .with_target("sigil_host", tracing::Level::DEBUG)
        .with_target("sigil_providers", tracing::Level::DEBUG);
    let otel = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_filter(spans);
    let _ = tracing_subscriber::registry()
        .with(fmt)
        .with(otel)
        .try_init();
    Ok(Some(telemetry))
}

/// Runs the command; `loaded` is `sigil up`'s configuration, read once by `main`.
fn run(
    cli: Cli,
    loaded: Option<Result<sigil_host::up::HostConfig, sigil_host::up::ConfigError>>,
) -> Result<()> {
    match cli.command {
        Command::Call(args) => call(args),
        Command::Inspect(args) => inspect(&args),
        Command::Push(args) => push(&args),
        Command::Pull(args) => pull(&args),
        Command::Build(args) => build(args),
        Command::Up(args) => up(&args, loaded),
        Command::Workflow(command) => workflow::workflow(command, default_cache_dir()),
        Command::Provider(ProviderCommand::Run(args)) => provider_run(&args),
        Command::Lattice(command) => lattice::lattice(command),
    }
}

fn up(
    args: &UpArgs,
    loaded: Option<Result<sigil_host::up::HostConfig, sigil_host::up::ConfigError>>,
) -> Result<()> {
    let mut config = match loaded {
        Some(config) => config?,
        None => sigil_host::up::HostConfig::load(&args.config)?,
    };
    if config.engine.cache_dir.is_none() {
        config.engine.cache_dir = default_cache_dir();
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("sigil")
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        if args.check {
            let report = sigil_host::up::check(&config).await?;
            println!(
                "{}: ok ({} actors, {} providers, {} links)",
                config.path.display(),
                report.actors,
                report.providers,
                report.links
            );
            Ok(())
        } else {
            sigil_host::up::run(config)
                .await
                .map_err(anyhow::Error::from)
        }
    })
}

fn default_cache_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("SIGIL_CACHE_DIR").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(dir));
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(dir).join("sigil"));
    }
    std::env::home_dir().map(|h| h.join(".cache").join("sigil"))
}

fn call(a: CallArgs) -> Result<()> {
    let payload = request_payload(&a)?;
    let mut policy = Policy::new();
    for issuer in &a.issuers {
        keys::parse_public_key(issuer, KeyKind::Account, "--issuer")?;
        policy = policy.allow_issuer(issuer.clone());
    }
    let defaults = Limits::default();
    let limits = Limits {
        deadline: a.limits.deadline.unwrap_or(defaults.deadline),
        fuel: a.limits.fuel,
        max_memory: a.limits.max_memory.unwrap_or(defaults.max_memory),
        max_response: a.limits.max_response.unwrap_or(defaults.max_response),
        ..defaults
    };
    let config = EngineConfig {
        limits,
        // One invocation: a small pool reserves less address space.
        max_instances: 4,
        cache_dir: config_cache(&a),
        ..EngineConfig::default()
    };
    let host = Host::builder()
        .engine_config(config)
        .policy(policy)
        .build()?;
    let actor = if sigil_host::oci::ModuleRef::is_reference(&a.module) {
        let registry = a.registry.registry(config_cache(&a).as_deref())?;
        let fetched = block_on(registry.fetch(&sigil_host::oci::ModuleSource::parse(
            &a.module,
            Path::new("."),
        )?))?;
        host.load_actor(fetched.bytes)
            .with_context(|| format!("cannot load {}", fetched.origin))?
    } else {
        host.load_actor_file(Path::new(&a.module))
            .with_context(|| format!("cannot load {}", a.module))?
    };
    let response = host
        .invoke(&actor, &a.operation, &payload)
        .with_context(|| format!("{} `{}` failed", actor.name(), a.operation))?;
    print_response(&response, a.raw_output)
}

/// The cache directory `sigil call` uses.
fn config_cache(a: &CallArgs) -> Option<PathBuf> {
    if a.no_cache {
        None
    } else {
        a.cache_dir.clone().or_else(default_cache_dir)
    }
}

/// Runs a future to its end on a runtime of its own (for the synchronous commands).
pub(crate) fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map(|rt| rt.block_on(f))
        .unwrap_or_else(|e| {
            eprintln!("error: cannot start the async runtime: {e}");
            std::process::exit(2)
        })
}

fn push(a: &PushArgs) -> Result<()> {
    let reference = sigil_host::oci::ModuleRef::parse(&a.reference)?;
    let bytes =
        std::fs::read(&a.module).with_context(|| format!("cannot read {}", a.module.display()))?;
    let registry = a.registry.registry(default_cache_dir().as_deref())?;
    let pushed = block_on(registry.push(&bytes, &a.module.display().to_string(), &reference))?;
    eprintln!("pushed {} ({} bytes)", a.module.display(), bytes.len());
    println!("{}", pushed.pinned);
    Ok(())
}

fn pull(a: &PullArgs) -> Result<()> {
    let reference = sigil_host::oci::ModuleRef::parse(&a.reference)?;
    let mut policy = Policy::new();
    for issuer in &a.issuers {
        keys::parse_public_key(issuer, KeyKind::Account, "--issuer")?;
        policy = policy.allow_issuer(issuer.clone());
    }
    let registry = a.registry.registry(default_cache_dir().as_deref())?;
    let pulled = block_on(registry.pull(&reference))?;
    let claims = sigil_claims::verify(&pulled.module, &policy)
        .with_context(|| format!("{}: the module is refused", pulled.pinned))?;
    let output = a.output.clone().unwrap_or_else(|| {
        let last = reference
            .repository()
            .rsplit('/')
            .next()
            .unwrap_or("module");
        PathBuf::from(format!("{last}.wasm"))
    });
    std::fs::write(&output, &pulled.module)
        .with_context(|| format!("cannot write {}", output.display()))?;
    eprintln!(
        "pulled {} rev {} ({} bytes{}) to {}",
        claims.name().unwrap_or("module"),
        claims.rev().unwrap_or(0),
        pulled.module.len(),
        if pulled.from_cache {
            ", from the cache"
        } else {
            ""
        },
        output.display()
    );
    println!("{}", pulled.pinned);
    Ok(())
}

fn request_payload(a: &CallArgs) -> Result<Vec<u8>> {
    let bytes = match (&a.data, &a.data_file) {
        (Some(d), _) => d.as_bytes().to_vec(),
        (None, Some(f)) if f.as_os_str() == "-" => read_stdin()?,
        (None, Some(f)) => {
            std::fs::read(f).with_context(|| format!("cannot read {}", f.display()))?
        }
        (None, None) if !std::io::stdin().is_terminal() => read_stdin()?,
        (None, None) => return Ok(Vec::new()),
    };
    if a.raw || bytes.is_empty() {
        return Ok(bytes);
    }
    let value: serde_json::Value = serde_json::from_slice(&bytes)
        .context("the request is not valid JSON (pass --raw to send bytes as they are)")?;
    rmp_serde::to_vec_named(&value).context("cannot encode the request as MessagePack")
}

fn read_stdin() -> Result<Vec<u8>> {
    let mut buf = Vec::new();
    std::io::stdin()
        .read_to_end(&mut buf)
        .context("cannot read standard input")?;
    Ok(buf)
}

/// Decodes a response that is exactly one MessagePack value.
fn decode_msgpack(bytes: &[u8]) -> Option<serde_json::Value> {
    use serde::Deserialize;
    let mut de = rmp_serde::Deserializer::new(bytes);
    let value = serde_json::Value::deserialize(&mut de).ok()?;
    de.into_inner().is_empty().then_some(value)
}

fn print_response(response: &[u8], raw: bool) -> Result<()> {
    let mut out = std::io::stdout().lock();
    if !raw
        && !response.is_empty()
        && let Some(value) = decode_msgpack(response)
    {
        let text = match &value {
            // A bare string prints as text (HTML, Markdown...), not as a JSON literal.
            serde_json::Value::String(s) => s.clone(),
            v => serde_json::to_string_pretty(v)?,
        };
        writeln!(out, "{text}")?;
        return Ok(());
    }
    out.write_all(response)?;
    if !raw && std::str::from_utf8(response).is_ok() && !response.ends_with(b"\n") {
        writeln!(out)?;
    }
    Ok(())
}

fn inspect(a: &InspectArgs) -> Result<()> {
    let bytes: std::sync::Arc<[u8]> = if sigil_host::oci::ModuleRef::is_reference(&a.module) {
        let reference = sigil_host::oci::ModuleRef::parse(&a.module)?;
        let registry = a.registry.registry(default_cache_dir().as_deref())?;
        let pulled = block_on(registry.pull(&reference))?;
        eprintln!("{}", pulled.pinned);
        pulled.module
    } else {
        std::fs::read(&a.module)
            .with_context(|| format!("cannot read {}", a.module))?
            .into()
    };
    let ins = sigil_claims::inspect(&bytes, &Policy::new())
        .with_context(|| format!("cannot inspect {}", a.module))?;
    if a.json {
        let v = serde_json::json!({
            "section": ins.section,
            "claims": ins.claims,
            "computed_hash": ins.computed_hash,
            "valid": ins.verification.is_ok(),
            "error": ins.verification.as_ref().err().map(ToString::to_string),
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    print!(
        "{}",
        display::format_rows(
            &display::actor_rows(&ins, false),
            std::io::stdout().is_terminal()
        )
    );
    Ok(())
}

fn build(a: BuildArgs) -> Result<()> {
    let keys = match &a.keys {
        Some(dir) => KeyStore::new(dir),
        None => KeyStore::from_env()?,
    };
    let mut opts = BuildOptions::new(keys);
    opts.out_dir = a.out_dir.clone();
    opts.issuer = a
        .issuer
        .as_deref()
        .map(str::parse::<KeySource>)
        .transpose()?;
    opts.stack_size = a.stack_size;
    opts.locked = a.locked;
    let default_issuer = opts.keys.path_of(KeyKind::Account, "default");
    let announce_key = opts.issuer.is_none() && !default_issuer.exists();
    let paths = if a.paths.is_empty() {
        vec![PathBuf::from(".")]
    } else {
        a.paths.clone()
    };
    for path in &paths {
        let built = sigil_host::build::build(path, &opts)
            .with_context(|| format!("cannot build {}", path.display()))?;
        for b in built {
            eprintln!(
                "signed {:<12} {:>8} bytes  {}  {}",
                b.name,
                b.size,
                b.subject,
                relative(&b.path).display()
            );
        }
    }
    if announce_key && default_issuer.exists() {
        eprintln!(
            "created a development signing key (account \"default\") at {}; \
             use --issuer to sign with another",
            default_issuer.display()
        );
    }
    Ok(())
}

fn relative(p: &Path) -> PathBuf {
    std::env::current_dir()
        .ok()
        .and_then(|cwd| p.strip_prefix(cwd).ok().map(Path::to_path_buf))
        .unwrap_or_else(|| p.to_path_buf())
}

/// `sigil provider run`: one built-in provider, served as a plugin.
fn provider_run(args: &ProviderRunArgs) -> Result<()> {
    let mut config = sigil_providers::LinkConfig::new();
    for pair in &args.config {
        let (k, v) = pair
            .split_once('=')
            .with_context(|| format!("--config {pair:?} is not KEY=VALUE"))?;
        config = config.with(k.trim(), v.trim());
    }
    if args.kind == "plugin" {
        anyhow::bail!("a plugin cannot serve another plugin; name a built-in kind");
    }
    let provider =
        sigil_host::up::create_provider(&args.kind, &config, &sigil_host::up::Builtins::default())
            .map_err(|e| anyhow::anyhow!("provider {}: {e}", args.kind))?;
    let plugin = sigil_providers::plugin::PluginConfig::from_env().map_err(anyhow::Error::msg)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime
        .block_on(sigil_providers::plugin::serve(provider, plugin))
        .map_err(anyhow::Error::msg)?;
    Ok(())
}
