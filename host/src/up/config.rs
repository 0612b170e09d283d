//! The host configuration file (`host.toml`) of `sigil up`.
//!
//! Every error names the file, the line and what to do about it: a host that refuses to
//! start should say why in one reading.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use sigil_providers::blobstore::StagingArea;
use sigil_providers::{
    DEFAULT_LINK_NAME, LinkConfig, LinkDefinition, ProviderError, parse_duration, parse_size,
};
use toml::Spanned;

use crate::engine::{EngineConfig, Limits};
use crate::oci::{ModuleRef, ModuleSource, RegistryOptions, RegistrySettings};

/// A configuration error: where it is and how to fix it. Shown as `file:line: message`,
/// or `file: message` when no line applies (the message then names the key).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{}: {message}", path.display(), if *line == 0 { String::new() } else { format!(":{line}") })]
pub struct ConfigError {
    /// The configuration file.
    pub path: PathBuf,
    /// The 1-based line of the offending key or value (0 when none applies).
    pub line: usize,
    /// What is wrong, and the fix.
    pub message: String,
}

/// The whole configuration, resolved: paths made absolute, values parsed.
#[derive(Debug, Clone)]
pub struct HostConfig {
    /// The file it was read from.
    pub path: PathBuf,
    /// `[telemetry]`: where traces are exported (the `OTEL_*` variables win over it).
    pub telemetry: Option<crate::telemetry::TelemetryTable>,
    /// The host's name (labels and logs).
    pub name: String,
    /// Free-form labels describing the host.
    pub labels: BTreeMap<String, String>,
    /// Where health, metrics and the link API are served; `None` disables it.
    pub admin_address: Option<String>,
    /// A bearer token the admin API requires for changes (links); `None` leaves changes
    /// open to whoever can reach the admin address (loopback by default).
    pub admin_token: Option<String>,
    /// How long a shutdown waits for in-flight invocations.
    pub drain_timeout: Duration,
    /// The engine settings (limits, cache).
    pub engine: EngineConfig,
    /// The verification policy.
    pub policy: sigil_claims::Policy,
    /// Policy control on top of the claims: Rego files and a decision service.
    pub policy_control: PolicyControl,
    /// Actor modules to load (files or `oci://` references), with the line that named each.
    pub actors: Vec<Located<ModuleSource>>,
    /// How this host reaches registries (`[[registries]]`, `allow_latest`,
    /// `max_module_size`); the environment's settings are added when the host starts.
    pub registry: RegistryOptions,
    /// Provider instances to start.
    pub providers: Vec<Located<ProviderSpec>>,
    /// Links to apply.
    pub links: Vec<Located<LinkDefinition>>,
    /// How workflow steps reach this host.
    pub workflows: WorkflowSettings,
    /// The Argo executor plugin endpoint, when enabled.
    pub argo: Option<ArgoSettings>,
    /// The lattice this host joins (for provider plugins), when configured.
    pub lattice: Option<LatticeSettings>,
    /// The line of every key of the file, for errors found after it was read.
    pub lines: KeyLines,
}

/// The line of each key and array item of a configuration file, by its path:
/// `host.admin_address`, `providers[0].config.url`, `policy.rego[1]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyLines(BTreeMap<String, usize>);

impl KeyLines {
    /// Reads the keys of TOML `text` (empty when it does not parse).
    pub fn read(text: &str) -> Self {
        let mut lines = KeyLines::default();
        if let Ok(doc) = toml::de::DeTable::parse(text) {
            lines.table(text, "", doc.get_ref());
        }
        lines
    }

    fn table(&mut self, text: &str, prefix: &str, table: &toml::de::DeTable<'_>) {
        for (key, value) in table {
            let path = if prefix.is_empty() {
                key.get_ref().to_string()
            } else {
                format!("{prefix}.{}", key.get_ref())
            };
            self.0
                .entry(path.clone())
                .or_insert_with(|| line_of(text, key.span().start));
            self.value(text, &path, value);
        }
    }

    fn value(&mut self, text: &str, path: &str, value: &toml::Spanned<toml::de::DeValue<'_>>) {
        match value.get_ref() {
            toml::de::DeValue::Table(t) => self.table(text, path, t),
            toml::de::DeValue::Array(items) => {
                for (i, item) in items.into_iter().enumerate() {
                    let path = format!("{path}[{i}]");
                    self.0
                        .insert(path.clone(), line_of(text, item.span().start));
                    self.value(text, &path, item);
                }
            }
            _ => {}
        }
    }

    /// The line of `key` itself, if the file has it.
    pub fn get(&self, key: &str) -> Option<usize> {
        self.0.get(key).copied()
    }

    /// The line of `key`, or else of the nearest enclosing key or table the file has.
    pub fn nearest(&self, key: &str) -> Option<usize> {
        let mut key = key;
        loop {
            if let Some(line) = self.get(key) {
                return Some(line);
            }
            key = &key[..key.rfind(['.', '['])?];
        }
    }

    /// The path of the first key named in backquotes in `message` (as provider errors
    /// name them) that `table` (a path like `providers[0].config`) has.
    pub fn named_in(&self, message: &str, table: &str) -> Option<String> {
        message
            .split('`')
            .skip(1)
            .step_by(2)
            .map(|k| format!("{table}.{k}"))
            .find(|path| self.get(path).is_some())
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// `[lattice]`: the NATS that hosts and provider plugins share, and the cluster key that
/// signs this host's requests to plugins.
#[derive(Clone)]
pub struct LatticeSettings {
    /// The NATS server.
    pub nats: String,
    /// The lattice name (subjects start with `sigil.<name>.`).
    pub name: String,
    /// The cluster seed (`SC...`): secret.
    pub cluster_seed: String,
    /// Other cluster keys (`C...`) whose actor calls and control requests this host
    /// accepts.
    pub cluster_issuers: Vec<String>,
    /// How often the host publishes a heartbeat event.
    pub heartbeat: Duration,
}

impl std::fmt::Debug for LatticeSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LatticeSettings")
            .field("nats", &self.nats)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// The policy control of `[policy]`: Rego files, a decision service, or neither.
#[derive(Debug, Clone, Default)]
pub struct PolicyControl {
    /// Rego files (`rego = [...]`), absolute.
    pub rego: Vec<PathBuf>,
    /// How often the Rego files are checked for changes; `None` never reloads them.
    pub reload: Option<Duration>,
    /// The external decision service (`[policy.service]`).
    pub service: Option<PolicyServiceSettings>,
}

impl PolicyControl {
    /// True when neither Rego files nor a service are configured.
    pub fn is_empty(&self) -> bool {
        self.rego.is_empty() && self.service.is_none()
    }
}

/// `[policy.service]`: a decision service answering on a NATS subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyServiceSettings {
    /// The NATS server URL.
    pub nats: String,
    /// The request subject.
    pub subject: String,
    /// How long to wait for an answer before denying.
    pub timeout: Duration,
    /// How long an invocation answer may be reused (zero: never).
    pub cache: Duration,
}

/// The `[argo]` section: where the executor plugin endpoint listens and the token Argo
/// sends.
#[derive(Debug, Clone)]
pub struct ArgoSettings {
    /// The listen address.
    pub address: String,
    /// The bearer token (read from `token_file` at start when given that way).
    pub token: String,
    /// `[argo.artifacts]`: the store artifacts are staged through, when set.
    pub artifacts: Option<Arc<StagingArea>>,
    /// `http_provider`: the HTTP client provider that modules of `plugin.wasm` templates
    /// are linked to, with the egress allowlist `http_allow`; none: such modules get no
    /// HTTP.
    pub wasm_http: Option<(String, String)>,
}

/// Where workflow runs and step messages live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkflowBackendSpec {
    /// In this process: runs are visible to this host only.
    Memory,
    /// On NATS JetStream: hosts connected to the same server share the steps.
    Nats {
        /// The server URL.
        url: String,
    },
}

/// The `[workflows]` section.
#[derive(Debug, Clone)]
pub struct WorkflowSettings {
    /// The backend.
    pub backend: WorkflowBackendSpec,
    /// The JetStream stream of step messages.
    pub stream: String,
    /// The subject prefix of step messages.
    pub subject_prefix: String,
    /// The key-value bucket of run state.
    pub bucket: String,
    /// How long a step may go without a sign of life before another host takes it.
    pub ack_wait: Duration,
    /// Steps this host runs at once.
    pub max_concurrent: usize,
    /// Copies a NATS cluster keeps of the stream and the bucket (1 to 5).
    pub replicas: usize,
    /// How long a queued step may wait with no host serving its actor before it fails.
    pub no_host_timeout: Duration,
    /// Subjects that start a run per message.
    pub triggers: Vec<Located<Trigger>>,
    /// Workflow spec files this host offers to start by name (the admin API and the
    /// dashboard); the modules their steps name by file are loaded.
    pub specs: Vec<Located<PathBuf>>,
    /// `[workflows.artifacts]`: the artifact repository WASI steps' artifacts move
    /// through on this host (else `[argo.artifacts]`).
    pub artifacts: Option<Arc<StagingArea>>,
}

impl Default for WorkflowSettings {
    fn default() -> Self {
        WorkflowSettings {
            backend: WorkflowBackendSpec::Memory,
            stream: "SIGIL_STEPS".into(),
            subject_prefix: "sigil.steps".into(),
            bucket: "SIGIL_RUNS".into(),
            ack_wait: Duration::from_secs(30),
            max_concurrent: 64,
            replicas: 1,
            no_host_timeout: Duration::from_secs(30),
            triggers: Vec::new(),
            specs: Vec::new(),
            artifacts: None,
        }
    }
}

/// A trigger: each message on `subject` starts a run of `workflow` with the message (a
/// JSON object) as its inputs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trigger {
    /// The subject (on NATS with the NATS backend, on the in-process bus otherwise).
    pub subject: String,
    /// The workflow spec file.
    pub workflow: PathBuf,
}

/// A value and the line of the configuration file it came from.
#[derive(Debug, Clone)]
pub struct Located<T> {
    /// The value.
    pub value: T,
    /// Its 1-based line.
    pub line: usize,
}

/// One provider instance of the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderSpec {
    /// The instance name links refer to.
    pub name: String,
    /// The implementation, e.g. `keyvalue-redis`.
    pub kind: String,
    /// Its provider-level configuration.
    pub config: LinkConfig,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    host: RawHost,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    policy: RawPolicy,
    #[serde(default)]
    actors: Vec<Spanned<RawActor>>,
    #[serde(default)]
    registries: Vec<Spanned<RawRegistry>>,
    #[serde(default)]
    providers: Vec<Spanned<RawProvider>>,
    #[serde(default)]
    links: Vec<Spanned<RawLink>>,
    #[serde(default)]
    workflows: RawWorkflows,
    argo: Option<Spanned<RawArgo>>,
    lattice: Option<Spanned<RawLattice>>,
    telemetry: Option<Spanned<crate::telemetry::TelemetryTable>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLattice {
    nats: Option<String>,
    name: Option<String>,
    cluster_seed: Option<String>,
    cluster_seed_file: Option<PathBuf>,
    #[serde(default)]
    cluster_issuers: Vec<String>,
    heartbeat: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawArgo {
    address: Option<String>,
    token: Option<String>,
    token_file: Option<PathBuf>,
    artifacts: Option<BTreeMap<String, Value>>,
    http_provider: Option<String>,
    #[serde(default)]
    http_allow: Vec<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawWorkflows {
    nats: Option<String>,
    stream: Option<String>,
    subject_prefix: Option<String>,
    bucket: Option<String>,
    ack_wait: Option<Spanned<String>>,
    max_concurrent: Option<usize>,
    replicas: Option<Spanned<i64>>,
    no_host_timeout: Option<Spanned<String>>,
    artifacts: Option<BTreeMap<String, Value>>,
    #[serde(default)]
    specs: Vec<Spanned<String>>,
    #[serde(default)]
    triggers: Vec<Spanned<RawTrigger>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTrigger {
    subject: String,
    workflow: PathBuf,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawHost {
    name: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    admin_address: Option<Spanned<String>>,
    admin_token: Option<String>,
    drain_timeout: Option<Spanned<String>>,
    cache_dir: Option<PathBuf>,
    #[serde(default)]
    allow_latest: bool,
    max_module_size: Option<Spanned<Size>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    deadline: Option<Spanned<String>>,
    fuel: Option<u64>,
    max_memory: Option<Spanned<Size>>,
    max_request: Option<Spanned<Size>>,
    max_response: Option<Spanned<Size>>,
    max_instances: Option<u32>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    #[serde(default)]
    issuers: Vec<String>,
    #[serde(default)]
    revoked: Vec<String>,
    #[serde(default)]
    allow_legacy_hash: bool,
    #[serde(default)]
    rego: Vec<PathBuf>,
    reload: Option<Spanned<String>>,
    service: Option<Spanned<RawPolicyService>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicyService {
    nats: Option<String>,
    subject: Option<String>,
    timeout: Option<Spanned<String>>,
    cache: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawActor {
    path: Option<PathBuf>,
    reference: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRegistry {
    host: Option<String>,
    #[serde(default)]
    insecure: bool,
    ca_file: Option<PathBuf>,
    username: Option<String>,
    password_file: Option<PathBuf>,
    token_file: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProvider {
    name: String,
    kind: Spanned<String>,
    #[serde(default)]
    config: BTreeMap<String, Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLink {
    actor: String,
    contract: String,
    provider: String,
    name: Option<String>,
    #[serde(default)]
    config: BTreeMap<String, Value>,
}

/// A size: a number of bytes or a string like `"64MiB"`.
#[derive(Deserialize)]
#[serde(untagged)]
enum Size {
    Bytes(u64),
    Text(String),
}

/// A configuration value: providers read strings, so numbers and booleans are written out
/// and arrays are joined with commas.
#[derive(Deserialize)]
#[serde(untagged)]
enum Value {
    Text(String),
    Integer(i64),
    Float(f64),
    Bool(bool),
    List(Vec<Value>),
}

impl Value {
    fn into_string(self) -> String {
        match self {
            Value::Text(s) => s,
            Value::Integer(i) => i.to_string(),
            Value::Float(f) => f.to_string(),
            Value::Bool(b) => b.to_string(),
            Value::List(items) => items
                .into_iter()
                .map(Value::into_string)
                .collect::<Vec<_>>()
                .join(","),
        }
    }
}

fn to_link_config(values: BTreeMap<String, Value>) -> LinkConfig {
    values
        .into_iter()
        .map(|(k, v)| (k, v.into_string()))
        .collect()
}

/// The kinds of built-in provider `kind = ...` accepts.
pub const PROVIDER_KINDS: &[&str] = &[
    "keyvalue-memory",
    "keyvalue-redis",
    "messaging-bus",
    "messaging-nats",
    "blobstore-fs",
    "blobstore-s3",
    "httpserver",
    "httpclient",
    "plugin",
];

struct Source<'a> {
    path: &'a Path,
    text: &'a str,
    lines: KeyLines,
}

impl Source<'_> {
    fn line_of(&self, offset: usize) -> usize {
        line_of(self.text, offset)
    }

    /// An error at the line of `key`, or of the nearest enclosing key the file has.
    fn at(&self, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError {
            path: self.path.to_path_buf(),
            line: self.lines.nearest(key).unwrap_or(0),
            message: message.into(),
        }
    }

    fn error(&self, span: std::ops::Range<usize>, message: impl Into<String>) -> ConfigError {
        ConfigError {
            path: self.path.to_path_buf(),
            line: self.line_of(span.start),
            message: message.into(),
        }
    }
}

/// An artifact repository table (`[argo.artifacts]`, `[workflows.artifacts]`): `kind`
/// `s3` or `fs` and the blob-store keys of that kind; `fs` roots are relative to the file.
fn staging_area(
    mut table: BTreeMap<String, Value>,
    section: &str,
    source: &Source<'_>,
    resolve: &dyn Fn(&Path) -> PathBuf,
) -> Result<Arc<StagingArea>, ConfigError> {
    let kind = table.remove("kind").map(Value::into_string);
    let mut config = to_link_config(table);
    if kind.as_deref() == Some("fs")
        && let Some(root) = config.0.get_mut("root")
    {
        *root = resolve(Path::new(root.as_str())).display().to_string();
    }
    let area = match kind.as_deref() {
        Some(kind @ ("s3" | "fs")) => StagingArea::open(kind, &config),
        _ => Err(ProviderError::Config(format!(
            "[{section}] needs kind = \"s3\" (Argo's artifact repository bucket) or kind = \"fs\""
        ))),
    };
    area.map(Arc::new).map_err(|e| {
        let message = e.to_string();
        let key = source
            .lines
            .named_in(&message, section)
            .unwrap_or_else(|| section.into());
        source.at(&key, format!("[{section}]: {message}"))
    })
}

impl HostConfig {
    /// Reads and checks the configuration file at `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            path: path.to_path_buf(),
            line: 0,
            message: format!("cannot read the configuration: {e}"),
        })?;
        Self::parse(path, &text)
    }

    /// Checks configuration `text` as if read from `path` (relative paths in it are
    /// relative to `path`'s directory).
    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let source = Source {
            path,
            text,
            lines: KeyLines::read(text),
        };
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let span = e.span().unwrap_or(0..0);
            source.error(span, e.message().trim().to_string())
        })?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let resolve = |p: &Path| {
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                base.join(p)
            }
        };

        let duration = |value: &Spanned<String>, what: &str| {
            parse_duration(value.get_ref()).ok_or_else(|| {
                source.error(
                    value.span(),
                    format!(
                        "{what} = {:?} is not a duration; write it like \"500ms\", \"10s\" or \"2m\"",
                        value.get_ref()
                    ),
                )
            })
        };
        let size = |value: &Spanned<Size>, what: &str| -> Result<usize, ConfigError> {
            let bytes = match value.get_ref() {
                Size::Bytes(n) => Some(*n),
                Size::Text(t) => parse_size(t),
            };
            bytes.and_then(|b| usize::try_from(b).ok()).ok_or_else(|| {
                source.error(
                    value.span(),
                    format!("{what} is not a size; write it like 1048576 or \"64MiB\""),
                )
            })
        };

        let mut limits = Limits::default();
        if let Some(d) = &raw.limits.deadline {
            limits.deadline = duration(d, "deadline")?;
        }
        limits.fuel = raw.limits.fuel;
        if let Some(s) = &raw.limits.max_memory {
            limits.max_memory = size(s, "max_memory")?;
        }
        if let Some(s) = &raw.limits.max_request {
            limits.max_request = size(s, "max_request")?;
        }
        if let Some(s) = &raw.limits.max_response {
            limits.max_response = size(s, "max_response")?;
        }
        let mut engine = EngineConfig {
            limits,
            cache_dir: raw.host.cache_dir.as_deref().map(resolve),
            ..EngineConfig::default()
        };
        if let Some(n) = raw.limits.max_instances {
            engine.max_instances = n;
        }

        let mut policy =
            sigil_claims::Policy::new().allow_legacy_hash(raw.policy.allow_legacy_hash);
        for issuer in raw.policy.issuers {
            policy = policy.allow_issuer(issuer);
        }
        for key in raw.policy.revoked {
            policy = policy.revoke_subject(key);
        }
        let reload = match &raw.policy.reload {
            None => Some(Duration::from_secs(1)),
            Some(r) if r.get_ref() == "off" => None,
            Some(r) => Some(duration(r, "reload")?).filter(|d| !d.is_zero()),
        };
        let service = match raw.policy.service {
            None => None,
            Some(s) => {
                let span = s.span();
                let s = s.into_inner();
                let subject = s.subject.filter(|v| !v.is_empty()).ok_or_else(|| {
                    source.error(
                        span.clone(),
                        "[policy.service] needs the subject the decision service answers on, \
                         like subject = \"sigil.policy\"",
                    )
                })?;
                PolicyServiceSettings {
                    nats: s
                        .nats
                        .filter(|v| !v.is_empty())
                        .unwrap_or_else(|| "nats://127.0.0.1:4222".to_string()),
                    subject,
                    timeout: match &s.timeout {
                        Some(d) => duration(d, "timeout")?,
                        None => Duration::from_millis(500),
                    },
                    cache: match &s.cache {
                        Some(d) => duration(d, "cache")?,
                        None => Duration::ZERO,
                    },
                }
                .into()
            }
        };
        let policy_control = PolicyControl {
            rego: raw.policy.rego.iter().map(|p| resolve(p)).collect(),
            reload,
            service,
        };

        let drain_timeout = match &raw.host.drain_timeout {
            Some(d) => duration(d, "drain_timeout")?,
            None => Duration::from_secs(30),
        };
        let admin_address = match raw.host.admin_address {
            None => Some("127.0.0.1:9090".to_string()),
            Some(a) if a.get_ref() == "off" || a.get_ref().is_empty() => None,
            Some(a) => {
                if a.get_ref().parse::<std::net::SocketAddr>().is_err() {
                    return Err(source.error(
                        a.span(),
                        format!(
                            "admin_address = {:?} is not an address; write it like \
                             \"127.0.0.1:9090\", or \"off\" to serve no admin endpoint",
                            a.get_ref()
                        ),
                    ));
                }
                Some(a.into_inner())
            }
        };

        let mut actors = Vec::new();
        for a in raw.actors {
            let line = source.line_of(a.span().start);
            let a = a.into_inner();
            let value = match (a.path, a.reference) {
                (Some(path), None) => ModuleSource::File(resolve(&path)),
                (None, Some(r)) => {
                    let at = source.line_of(r.span().start);
                    if !ModuleRef::is_reference(r.get_ref()) {
                        return Err(source.error(
                            r.span(),
                            format!(
                                "reference = {:?} is not an oci:// reference; write it like \
                                 \"oci://registry.example:5000/echo:1.0\", or give a file as path",
                                r.get_ref()
                            ),
                        ));
                    }
                    let reference = ModuleRef::parse(r.get_ref()).map_err(|e| ConfigError {
                        path: path.to_path_buf(),
                        line: at,
                        message: e.to_string(),
                    })?;
                    ModuleSource::Oci(reference)
                }
                (Some(_), Some(_)) => {
                    return Err(ConfigError {
                        path: path.to_path_buf(),
                        line,
                        message: "[[actors]] takes either path (a file) or reference (oci://...), \
                                  not both"
                            .into(),
                    });
                }
                (None, None) => {
                    return Err(ConfigError {
                        path: path.to_path_buf(),
                        line,
                        message: "[[actors]] needs path = \"FILE.wasm\" or reference = \
                                  \"oci://REGISTRY/REPOSITORY:TAG\""
                            .into(),
                    });
                }
            };
            actors.push(Located { line, value });
        }

        let mut registries: Vec<RegistrySettings> = Vec::new();
        for r in raw.registries {
            let span = r.span();
            let r = r.into_inner();
            let host = r.host.filter(|h| !h.trim().is_empty()).ok_or_else(|| {
                source.error(
                    span.clone(),
                    "[[registries]] needs host, the registry's host and port as references \
                     name it, like host = \"registry.example:5000\"",
                )
            })?;
            if host.contains('/') {
                return Err(source.error(
                    span,
                    format!(
                        "host = {host:?} is not a registry host; write it without scheme or \
                         path, like \"registry.example:5000\" (plain HTTP: insecure = true)"
                    ),
                ));
            }
            if registries.iter().any(|e| e.host == host) {
                return Err(source.error(
                    span,
                    format!("registry {host} is listed twice in [[registries]]"),
                ));
            }
            if r.username.is_some() != r.password_file.is_some() {
                return Err(source.error(
                    span,
                    format!(
                        "registry {host}: give both username and password_file, or token_file \
                         alone"
                    ),
                ));
            }
            registries.push(RegistrySettings {
                host,
                insecure: r.insecure,
                ca_file: r.ca_file.as_deref().map(resolve),
                username: r.username,
                password_file: r.password_file.as_deref().map(resolve),
                token_file: r.token_file.as_deref().map(resolve),
            });
        }
        let mut registry = RegistryOptions {
            registries,
            allow_latest: raw.host.allow_latest,
            ..RegistryOptions::default()
        };
        if let Some(s) = &raw.host.max_module_size {
            registry.max_module_size = size(s, "max_module_size")? as u64;
        }

        let lattice = match raw.lattice {
            None => None,
            Some(l) => {
                let span = l.span();
                let l = l.into_inner();
                let seed = match (
                    std::env::var("SIGIL_CLUSTER_SEED").ok(),
                    l.cluster_seed,
                    l.cluster_seed_file,
                ) {
                    (Some(seed), _, _) if !seed.trim().is_empty() => seed,
                    (_, Some(seed), _) => seed,
                    (_, None, Some(file)) => {
                        let file = resolve(&file);
                        std::fs::read_to_string(&file).map_err(|e| {
                            source.at(
                                "lattice.cluster_seed_file",
                                format!("cannot read cluster_seed_file {}: {e}", file.display()),
                            )
                        })?
                    }
                    _ => {
                        return Err(source.error(
                            span,
                            "[lattice] needs the cluster seed that signs this host's requests: \
                             cluster_seed_file = \"cluster.nk\" (or SIGIL_CLUSTER_SEED); make \
                             one with `sigil-claims keys gen cluster`",
                        ));
                    }
                };
                let seed = seed.trim().to_string();
                if !seed.starts_with("SC") || nkeys::KeyPair::from_seed(&seed).is_err() {
                    let key = if source.lines.get("lattice.cluster_seed").is_some() {
                        "lattice.cluster_seed"
                    } else {
                        "lattice.cluster_seed_file"
                    };
                    return Err(source.at(
                        key,
                        "the [lattice] cluster seed is not a cluster seed (they start with SC)",
                    ));
                }
                let name = l.name.unwrap_or_else(|| "default".to_string());
                if name.is_empty()
                    || !name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
                {
                    return Err(source.at(
                        "lattice.name",
                        format!("[lattice] name = {name:?}: use letters, digits, - and _"),
                    ));
                }
                for (i, key) in l.cluster_issuers.iter().enumerate() {
                    if !key.starts_with('C') || nkeys::KeyPair::from_public_key(key).is_err() {
                        return Err(source.at(
                            &format!("lattice.cluster_issuers[{i}]"),
                            format!("cluster_issuers: {key:?} is not a cluster public key (C...)"),
                        ));
                    }
                }
                let heartbeat = match &l.heartbeat {
                    Some(d) => duration(d, "heartbeat")?,
                    None => Duration::from_secs(30),
                };
                Some(LatticeSettings {
                    heartbeat,
                    cluster_issuers: l.cluster_issuers,
                    nats: l
                        .nats
                        .filter(|v| !v.is_empty())
                        .unwrap_or_else(|| "nats://127.0.0.1:4222".to_string()),
                    name,
                    cluster_seed: seed,
                })
            }
        };

        let mut providers: Vec<Located<ProviderSpec>> = Vec::new();
        for (index, p) in raw.providers.into_iter().enumerate() {
            let line = source.line_of(p.span().start);
            let p = p.into_inner();
            if !PROVIDER_KINDS.contains(&p.kind.get_ref().as_str()) {
                return Err(source.error(
                    p.kind.span(),
                    format!(
                        "unknown provider kind {:?}; use one of {}",
                        p.kind.get_ref(),
                        PROVIDER_KINDS.join(", ")
                    ),
                ));
            }
            if p.kind.get_ref() == "plugin" && lattice.is_none() {
                return Err(source.error(
                    p.kind.span(),
                    "a plugin provider is reached over the lattice: add a [lattice] section \
                     (nats, name, cluster_seed_file)",
                ));
            }
            if providers.iter().any(|q| q.value.name == p.name) {
                return Err(source.at(
                    &format!("providers[{index}].name"),
                    format!(
                        "a provider named {:?} is declared twice; give each a unique name",
                        p.name
                    ),
                ));
            }
            let mut config = to_link_config(p.config);
            if p.kind.get_ref() == "blobstore-fs"
                && let Some(root) = config.get("root")
            {
                // A relative root is relative to the configuration file, like actor paths.
                let root = resolve(Path::new(root)).display().to_string();
                config.0.insert("root".to_string(), root);
            }
            providers.push(Located {
                line,
                value: ProviderSpec {
                    name: p.name,
                    kind: p.kind.into_inner(),
                    config,
                },
            });
        }

        let mut links = Vec::new();
        for (index, l) in raw.links.into_iter().enumerate() {
            let line = source.line_of(l.span().start);
            let l = l.into_inner();
            if !providers.iter().any(|p| p.value.name == l.provider) {
                return Err(source.at(
                    &format!("links[{index}].provider"),
                    format!(
                        "the link names provider {:?}, which is not declared; add a \
                         [[providers]] entry with name = {:?} or fix the name",
                        l.provider, l.provider
                    ),
                ));
            }
            links.push(Located {
                line,
                value: LinkDefinition {
                    actor: l.actor,
                    contract_id: contract_id(&l.contract),
                    link_name: l.name.unwrap_or_else(|| DEFAULT_LINK_NAME.to_string()),
                    provider: l.provider,
                    config: to_link_config(l.config),
                },
            });
        }

        let mut workflows = WorkflowSettings::default();
        let raw_wf = raw.workflows;
        if let Some(url) = raw_wf.nats.filter(|u| !u.is_empty()) {
            workflows.backend = WorkflowBackendSpec::Nats { url };
        }
        if let Some(v) = raw_wf.stream {
            workflows.stream = v;
        }
        if let Some(v) = raw_wf.subject_prefix {
            workflows.subject_prefix = v;
        }
        if let Some(v) = raw_wf.bucket {
            workflows.bucket = v;
        }
        if let Some(d) = &raw_wf.ack_wait {
            workflows.ack_wait = duration(d, "ack_wait")?;
        }
        if let Some(n) = raw_wf.max_concurrent {
            workflows.max_concurrent = n.max(1);
        }
        if let Some(r) = &raw_wf.replicas {
            workflows.replicas = usize::try_from(*r.get_ref())
                .ok()
                .filter(|n| (1..=5).contains(n))
                .ok_or_else(|| {
                    source.error(
                        r.span(),
                        format!(
                            "replicas = {} is out of range; use 1 to 5 (3 on a three-node \
                             NATS cluster)",
                            r.get_ref()
                        ),
                    )
                })?;
        }
        if let Some(d) = &raw_wf.no_host_timeout {
            workflows.no_host_timeout = duration(d, "no_host_timeout")?;
            if workflows.no_host_timeout.is_zero() {
                return Err(source.error(
                    d.span(),
                    "no_host_timeout = \"0s\" would fail every step the moment no host \
                     serves its actor; use a wait like \"30s\"",
                ));
            }
        }
        if let Some(table) = raw_wf.artifacts {
            workflows.artifacts = Some(staging_area(
                table,
                "workflows.artifacts",
                &source,
                &resolve,
            )?);
        }
        for spec in raw_wf.specs {
            let line = source.line_of(spec.span().start);
            workflows.specs.push(Located {
                line,
                value: resolve(Path::new(spec.get_ref())),
            });
        }
        for t in raw_wf.triggers {
            let line = source.line_of(t.span().start);
            let t = t.into_inner();
            workflows.triggers.push(Located {
                line,
                value: Trigger {
                    subject: t.subject,
                    workflow: resolve(&t.workflow),
                },
            });
        }

        let argo = match raw.argo {
            None => None,
            Some(a) => {
                let a = a.into_inner();
                let token = match (a.token, a.token_file) {
                    (Some(t), None) if !t.trim().is_empty() => t.trim().to_string(),
                    (None, file) => {
                        let file = file
                            .map_or_else(|| PathBuf::from("/var/run/argo/token"), |f| resolve(&f));
                        std::fs::read_to_string(&file)
                            .map(|t| t.trim().to_string())
                            .ok()
                            .filter(|t| !t.is_empty())
                            .ok_or_else(|| {
                                source.at(
                                    "argo.token_file",
                                    format!(
                                        "[argo] needs the token Argo sends: cannot read a token \
                                         from {}; set token_file to the file Argo mounts, or token",
                                        file.display()
                                    ),
                                )
                            })?
                    }
                    _ => {
                        return Err(source.at(
                            "argo.token",
                            "[argo] takes either token or token_file, and the token may not be \
                             empty",
                        ));
                    }
                };
                let artifacts = match a.artifacts {
                    None => None,
                    Some(table) => Some(staging_area(table, "argo.artifacts", &source, &resolve)?),
                };
                let wasm_http = match a.http_provider.filter(|p| !p.is_empty()) {
                    None if !a.http_allow.is_empty() => {
                        return Err(source.at(
                            "argo.http_allow",
                            "http_allow needs http_provider, the HTTP client provider that \
                             plugin.wasm modules are linked to",
                        ));
                    }
                    None => None,
                    Some(p) if a.http_allow.is_empty() => {
                        return Err(source.at(
                            "argo.http_provider",
                            format!(
                                "http_provider = {p:?} needs http_allow, the hosts \
                                 plugin.wasm modules may reach (as for an httpclient link's \
                                 allow), like http_allow = [\"*.example.com\"]"
                            ),
                        ));
                    }
                    Some(p) => Some((p, a.http_allow.join(","))),
                };
                Some(ArgoSettings {
                    address: a.address.unwrap_or_else(|| "127.0.0.1:4355".into()),
                    token,
                    artifacts,
                    wasm_http,
                })
            }
        };

        let telemetry = match raw.telemetry {
            None => None,
            Some(t) => {
                let line = source.line_of(t.span().start);
                let table = t.into_inner();
                crate::telemetry::settings(Some(&table), &|_| None).map_err(|e| ConfigError {
                    path: path.to_path_buf(),
                    line,
                    message: format!("[telemetry]: {e}"),
                })?;
                Some(table)
            }
        };
        Ok(HostConfig {
            telemetry,
            path: path.to_path_buf(),
            name: raw.host.name.unwrap_or_else(default_host_name),
            labels: raw.host.labels,
            admin_address,
            admin_token: raw.host.admin_token.filter(|t| !t.is_empty()),
            drain_timeout,
            engine,
            policy,
            policy_control,
            actors,
            registry,
            providers,
            links,
            workflows,
            argo,
            lattice,
            lines: source.lines,
        })
    }

    /// An error at `line` of this configuration.
    pub fn error_at(&self, line: usize, message: impl Into<String>) -> ConfigError {
        ConfigError {
            path: self.path.clone(),
            line,
            message: message.into(),
        }
    }

    /// An error about `key` (a path like `policy.service.nats`): at its line, else at the
    /// line of the nearest enclosing table the file has; when the file has none of them
    /// (a default was used), the message is prefixed with the key path instead.
    pub fn error_for(&self, key: &str, message: impl Into<String>) -> ConfigError {
        let message = message.into();
        match self.lines.nearest(key) {
            Some(line) => self.error_at(line, message),
            None => self.error_at(0, format!("{key}: {message}")),
        }
    }

    /// An error a provider or link reported about its `config` table (`table` is a path
    /// like `providers[0]`): at the line of the key the message names, else at `line`.
    pub fn error_in_config(&self, table: &str, line: usize, message: String) -> ConfigError {
        match self.lines.named_in(&message, &format!("{table}.config")) {
            Some(key) => self.error_for(&key, message),
            None => self.error_at(line, message),
        }
    }
}

/// A contract ID from a full ID (`wasmcloud:keyvalue`) or a capability alias (`keyvalue`).
pub fn contract_id(text: &str) -> String {
    sigil_claims::caps::WELL_KNOWN
        .iter()
        .find(|(alias, _, _)| *alias == text)
        .map_or_else(|| text.to_string(), |(_, id, _)| (*id).to_string())
}

fn default_host_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_string())
        })
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "sigil".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<HostConfig, ConfigError> {
        HostConfig::parse(Path::new("/etc/sigil/host.toml"), text)
    }

    #[test]
    fn a_full_config() {
        let c = parse(
            r#"
[host]
labels = { zone = "a" }
drain_timeout = "5s"

[limits]
deadline = "2s"
max_memory = "32MiB"

[[actors]]
path = "counter.wasm"

[[providers]]
name = "kv"
kind = "keyvalue-redis"
config = { url = "redis://127.0.0.1:6379" }

[[links]]
actor = "counter"
contract = "keyvalue"
provider = "kv"
config = { prefix = "c:", allow = ["a", "b"], n = 3 }
"#,
        )
        .unwrap();
        assert_eq!(c.drain_timeout, Duration::from_secs(5));
        assert_eq!(c.engine.limits.deadline, Duration::from_secs(2));
        assert_eq!(c.engine.limits.max_memory, 32 << 20);
        assert_eq!(
            c.actors[0].value,
            ModuleSource::File(PathBuf::from("/etc/sigil/counter.wasm"))
        );
        assert_eq!(c.actors[0].line, 10);
        let link = &c.links[0].value;
        assert_eq!(link.contract_id, "wasmcloud:keyvalue");
        assert_eq!(link.link_name, "default");
        assert_eq!(link.config.get("allow"), Some("a,b"));
        assert_eq!(link.config.get("n"), Some("3"));
        assert_eq!(c.admin_address.as_deref(), Some("127.0.0.1:9090"));
    }

    #[test]
    fn workflows_and_argo_sections() {
        let c = parse(
            "[workflows]\nnats = \"nats://127.0.0.1:4222\"\nack_wait = \"3s\"\n\n\
             [[workflows.triggers]]\nsubject = \"go\"\nworkflow = \"flows/go.yaml\"\n\n\
             [argo]\ntoken = \"t\"\n",
        )
        .unwrap();
        assert_eq!(
            c.workflows.backend,
            WorkflowBackendSpec::Nats {
                url: "nats://127.0.0.1:4222".into()
            }
        );
        assert_eq!(c.workflows.ack_wait, Duration::from_secs(3));
        assert_eq!(c.workflows.replicas, 1);
        let t = &c.workflows.triggers[0];
        assert_eq!(t.line, 5);
        assert_eq!(t.value.workflow, Path::new("/etc/sigil/flows/go.yaml"));
        let argo = c.argo.unwrap();
        assert_eq!(
            (argo.address.as_str(), argo.token.as_str()),
            ("127.0.0.1:4355", "t")
        );

        // No readable token: refused, naming the file to set.
        let e = parse("[argo]\ntoken_file = \"/nonexistent/token\"\n").unwrap_err();
        assert_eq!(e.line, 2);
        assert!(e.message.contains("/nonexistent/token"), "{e}");
        let e = parse("[argo]\ntoken = \"t\"\ntoken_file = \"f\"\n").unwrap_err();
        assert!(e.message.contains("either token or token_file"), "{e}");
        let e = parse("[argo]\ntoken = \"t\"\nartifacts = { kind = \"ftp\" }\n").unwrap_err();
        assert!(e.message.contains("kind = \"s3\""), "{e}");
        let e = parse("[argo]\ntoken = \"t\"\nartifacts = { kind = \"s3\" }\n").unwrap_err();
        assert!(e.message.contains("bucket"), "{e}");
        let e = parse(
            "[argo]\ntoken = \"t\"\nartifacts = { kind = \"s3\", bucket = \"b\", link_root = \"../x\" }\n",
        )
        .unwrap_err();
        assert!(e.message.contains("link_root"), "{e}");
        let e = parse("[workflows]\nack_wait = \"often\"\n").unwrap_err();
        assert_eq!(e.line, 2);
        let c =
            parse("[workflows]\nnats = \"nats://a:4222,nats://b:4222\"\nreplicas = 3\n").unwrap();
        assert_eq!(c.workflows.replicas, 3);
        for bad in ["0", "6", "-1"] {
            let e = parse(&format!("[workflows]\n\nreplicas = {bad}\n")).unwrap_err();
            assert_eq!(e.line, 3, "{e}");
            assert!(e.message.contains("use 1 to 5"), "{e}");
        }
    }

    #[test]
    fn no_host_timeout_setting() {
        assert_eq!(
            parse("").unwrap().workflows.no_host_timeout,
            Duration::from_secs(30)
        );
        let c = parse("[workflows]\nno_host_timeout = \"2s\"\n").unwrap();
        assert_eq!(c.workflows.no_host_timeout, Duration::from_secs(2));
        let e = parse("[workflows]\nno_host_timeout = \"soon\"\n").unwrap_err();
        assert_eq!(e.line, 2, "{e}");
        assert!(
            e.message
                .contains("no_host_timeout = \"soon\" is not a duration"),
            "{e}"
        );
        let e = parse("[workflows]\n\nno_host_timeout = \"0s\"\n").unwrap_err();
        assert_eq!(e.line, 3, "{e}");
        assert!(
            e.message
                .contains("no_host_timeout = \"0s\" would fail every step"),
            "{e}"
        );
    }

    #[test]
    fn policy_control_section() {
        let c = parse(
            "[policy]\nrego = [\"policies/kv.rego\", \"/abs/host.rego\"]\nreload = \"2s\"\n\n\
             [policy.service]\nsubject = \"sigil.policy\"\ntimeout = \"250ms\"\n",
        )
        .unwrap();
        let p = &c.policy_control;
        assert_eq!(
            p.rego,
            [
                PathBuf::from("/etc/sigil/policies/kv.rego"),
                PathBuf::from("/abs/host.rego")
            ]
        );
        assert_eq!(p.reload, Some(Duration::from_secs(2)));
        assert_eq!(
            p.service,
            Some(PolicyServiceSettings {
                nats: "nats://127.0.0.1:4222".into(),
                subject: "sigil.policy".into(),
                timeout: Duration::from_millis(250),
                cache: Duration::ZERO,
            })
        );
        assert!(parse("").unwrap().policy_control.is_empty());
        assert_eq!(
            parse("[policy]\nreload = \"off\"\n")
                .unwrap()
                .policy_control
                .reload,
            None
        );

        let e = parse("[policy.service]\nnats = \"nats://h:4222\"\n").unwrap_err();
        assert!(e.message.contains("needs the subject"), "{e}");
        let e = parse("[policy]\nreload = \"sometimes\"\n").unwrap_err();
        assert_eq!(e.line, 2);
        let e = parse("[policy.service]\nsubject = \"s\"\nurl = \"x\"\n").unwrap_err();
        assert!(e.message.contains("url"), "{e}");
    }

    #[test]
    fn errors_name_the_line_and_the_fix() {
        let e = parse("[limits]\ndeadline = \"soon\"\n").unwrap_err();
        assert_eq!(e.line, 2);
        assert!(e.message.contains("not a duration"), "{e}");
        assert!(e.to_string().starts_with("/etc/sigil/host.toml:2:"), "{e}");

        let e = parse("[[providers]]\nname = \"x\"\nkind = \"keyvalue-mongo\"\n").unwrap_err();
        assert_eq!(e.line, 3);
        assert!(e.message.contains("keyvalue-redis"), "{e}");

        let e = parse("[host]\nadmin = 1\n").unwrap_err();
        assert_eq!(e.line, 2);
        assert!(e.message.contains("admin"), "{e}");

        // At the line of the key at fault, not of the table's header.
        let e = parse("[[links]]\nactor = \"a\"\ncontract = \"keyvalue\"\nprovider = \"nope\"\n")
            .unwrap_err();
        assert_eq!(e.line, 4);
        assert!(e.message.contains("not declared"), "{e}");
        let e = parse(
            "[[providers]]\nname = \"kv\"\nkind = \"keyvalue-memory\"\n\n[[providers]]\n\
             kind = \"keyvalue-memory\"\nname = \"kv\"\n",
        )
        .unwrap_err();
        assert_eq!(e.line, 7, "{e}");
        assert!(e.message.contains("declared twice"), "{e}");

        let e = parse("[host\n").unwrap_err();
        assert_eq!(e.line, 1);
    }

    #[test]
    fn argo_http_for_wasm_modules_needs_both_keys() {
        let base = "[argo]\ntoken = \"t\"\n";
        let c = parse(&format!(
            "{base}http_provider = \"web\"\nhttp_allow = [\"a.example\", \"b.example:8080\"]\n"
        ))
        .unwrap();
        assert_eq!(
            c.argo.unwrap().wasm_http,
            Some(("web".to_string(), "a.example,b.example:8080".to_string()))
        );
        let e = parse(&format!("{base}http_provider = \"web\"\n")).unwrap_err();
        assert!(e.message.contains("needs http_allow") && e.line == 3, "{e}");
        let e = parse(&format!("{base}http_allow = [\"x\"]\n")).unwrap_err();
        assert!(
            e.message.contains("needs http_provider") && e.line == 3,
            "{e}"
        );
    }

    #[test]
    fn actors_by_reference_and_registries() {
        let c = parse(
            "[host]\nallow_latest = true\nmax_module_size = \"8MiB\"\n\n\
             [[actors]]\nreference = \"oci://reg.example:5000/sigil/echo:1\"\n\n\
             [[registries]]\nhost = \"reg.example:5000\"\nusername = \"ci\"\n\
             password_file = \"secrets/reg\"\nca_file = \"ca.pem\"\n\n\
             [[registries]]\nhost = \"localhost:5000\"\ninsecure = true\n",
        )
        .unwrap();
        match &c.actors[0].value {
            ModuleSource::Oci(r) => {
                assert_eq!(r.to_string(), "oci://reg.example:5000/sigil/echo:1")
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(c.actors[0].line, 5);
        assert!(c.registry.allow_latest);
        assert_eq!(c.registry.max_module_size, 8 << 20);
        let r = &c.registry.registries[0];
        assert_eq!(
            r.password_file,
            Some(PathBuf::from("/etc/sigil/secrets/reg"))
        );
        assert_eq!(r.ca_file, Some(PathBuf::from("/etc/sigil/ca.pem")));
        assert!(c.registry.registries[1].insecure);

        for (text, line, says) in [
            (
                "[[actors]]\nreference = \"oci://echo:1\"\n",
                2,
                "names no registry",
            ),
            (
                "[[actors]]\nreference = \"echo.wasm\"\n",
                2,
                "not an oci:// reference",
            ),
            (
                "[[actors]]\npath = \"a.wasm\"\nreference = \"oci://r:1/a:1\"\n",
                1,
                "not both",
            ),
            ("[[actors]]\n", 1, "needs path"),
            ("[[registries]]\ninsecure = true\n", 1, "needs host"),
            (
                "[[registries]]\nhost = \"https://r.example/v2\"\n",
                1,
                "without scheme",
            ),
            (
                "[[registries]]\nhost = \"r:1\"\nusername = \"u\"\n",
                1,
                "both username",
            ),
            (
                "[[registries]]\nhost = \"r:1\"\n[[registries]]\nhost = \"r:1\"\n",
                3,
                "twice",
            ),
            (
                "[[registries]]\nhost = \"r:1\"\npassword = \"x\"\n",
                3,
                "password",
            ),
            ("[host]\nmax_module_size = \"big\"\n", 2, "not a size"),
        ] {
            let e = parse(text).unwrap_err();
            assert!(e.message.contains(says), "{text}: {e}");
            assert_eq!(e.line, line, "{text}: {e}");
        }
    }

    #[test]
    fn errors_found_later_name_the_key_line_or_the_key_path() {
        let c = parse(
            "[host]\nadmin_address = \"127.0.0.1:1\"\n\n[[providers]]\nname = \"kv\"\n\
             kind = \"keyvalue-memory\"\n\n[providers.config]\nmax_bytes = 1\nmax_byte = 2\n\n\
             [policy]\nrego = [\n  \"a.rego\",\n  \"b.rego\",\n]\n\n[policy.service]\n\
             subject = \"s\"\n",
        )
        .unwrap();
        assert_eq!(c.error_for("host.admin_address", "x").line, 2);
        assert_eq!(c.lines.get("providers[0].config.max_byte"), Some(10));
        assert_eq!(c.lines.get("policy.rego[1]"), Some(15));
        // A provider's complaint names the key in backquotes: its line, else the header's.
        let e = c.error_in_config("providers[0]", 4, "unknown key `max_byte`; ...".into());
        assert_eq!(e.line, 10);
        let e = c.error_in_config("providers[0]", 4, "`url` is required".into());
        assert_eq!(e.line, 4);
        // A defaulted key: the line of its table.
        let e = c.error_for("policy.service.nats", "no answer");
        assert_eq!(e.line, 18);
        // Not in the file at all: the key path, and no `:0:`.
        let e = c.error_for("lattice.nats", "no answer");
        assert_eq!(e.line, 0);
        assert_eq!(
            e.to_string(),
            "/etc/sigil/host.toml: lattice.nats: no answer"
        );
    }

    #[test]
    fn the_lattice_section_is_checked() {
        let cluster = nkeys::KeyPair::new_cluster();
        let seed = cluster.seed().unwrap();
        let c = parse(&format!(
            "[lattice]\nname = \"prod\"\ncluster_seed = \"{seed}\"\nheartbeat = \"5s\"\n\
             cluster_issuers = [\"{}\"]\n",
            cluster.public_key()
        ))
        .unwrap();
        let l = c.lattice.unwrap();
        assert_eq!(
            (l.name.as_str(), l.nats.as_str(), l.heartbeat),
            ("prod", "nats://127.0.0.1:4222", Duration::from_secs(5))
        );

        let e = parse("[lattice]\nname = \"prod\"\n").unwrap_err();
        assert_eq!(e.line, 1);
        assert!(e.message.contains("cluster_seed_file"), "{e}");
        let account = nkeys::KeyPair::new_account().seed().unwrap();
        let e = parse(&format!("[lattice]\ncluster_seed = \"{account}\"\n")).unwrap_err();
        assert!(e.message.contains("not a cluster seed"), "{e}");
        assert!(
            !e.message.contains(&account),
            "the seed must not be shown: {e}"
        );
        let e = parse("[lattice]\ncluster_seed_file = \"missing.nk\"\n").unwrap_err();
        assert!(e.message.contains("missing.nk"), "{e}");
        let e = parse(&format!(
            "[lattice]\nname = \"a.b\"\ncluster_seed = \"{seed}\"\n"
        ))
        .unwrap_err();
        assert!(e.message.contains("letters, digits"), "{e}");
        let e = parse(&format!(
            "[lattice]\ncluster_seed = \"{seed}\"\ncluster_issuers = [\n  \"{}\",\n  \"AXYZ\",\n]\n",
            cluster.public_key()
        ))
        .unwrap_err();
        assert!(e.message.contains("not a cluster public key"), "{e}");
        assert_eq!(e.line, 5, "{e}");
        let e = parse(&format!(
            "[lattice]\ncluster_seed = \"{seed}\"\n\nheartbeat = \"often\"\n"
        ))
        .unwrap_err();
        assert_eq!(e.line, 4);

        // A plugin needs the lattice; its own settings are checked when it is created.
        let e = parse("[[providers]]\nname = \"kv\"\nkind = \"plugin\"\n").unwrap_err();
        assert_eq!(e.line, 3);
        assert!(e.message.contains("[lattice]"), "{e}");
    }
}
