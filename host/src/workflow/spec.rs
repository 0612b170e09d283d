//! The workflow spec: a versioned YAML document of inputs, steps and outputs, checked in
//! full before anything runs.
//!
//! ```yaml
//! version: 1
//! name: publish
//! inputs:
//!   markdown: { description: the document }
//!   title: { default: untitled }
//! steps:
//!   - name: render
//!     actor: markdown            # a name, a public key, or a .wasm file
//!     operation: render
//!     input: { markdown: "${{ inputs.markdown }}" }
//!     retry: { limit: 2, backoff: 100ms }
//!     timeout: 5s
//!   - name: store
//!     actor: blobstep
//!     operation: store
//!     depends: [render]
//!     input:
//!       container: site
//!       object: "${{ inputs.title }}.html"
//!       body: "${{ steps.render.output.html }}"
//! outputs:
//!   stored: "${{ steps.store.output }}"
//! ```

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The only spec version so far.
pub const VERSION: u32 = 1;

/// Longest step, input or workflow name.
const MAX_NAME: usize = 64;

/// Why a spec was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SpecError(pub String);

fn err(message: impl Into<String>) -> SpecError {
    SpecError(message.into())
}

/// A workflow, as written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkflowSpec {
    /// The spec version; must be [`VERSION`].
    pub version: u32,
    /// The workflow's name.
    pub name: String,
    /// What it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Its inputs, by name.
    #[serde(default)]
    pub inputs: BTreeMap<String, InputSpec>,
    /// Its steps; order does not matter, `depends` does.
    pub steps: Vec<StepSpec>,
    /// What the run answers when it succeeds, built like a step's input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outputs: Option<Value>,
}

/// One input of a workflow.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputSpec {
    /// What it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The value when none is given; without one, the input is required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<Value>,
}

/// One step: an operation of an actor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepSpec {
    /// Its name, unique in the workflow.
    pub name: String,
    /// The actor: a public key (`M...`), a name from its claims, or a path to a signed
    /// `.wasm` module (relative to the spec file).
    pub actor: String,
    /// The operation to invoke.
    pub operation: String,
    /// The request, with `${{ ... }}` references to inputs and earlier steps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<Value>,
    /// Steps that must finish first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends: Vec<String>,
    /// Retries after a failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetrySpec>,
    /// How long one attempt may take (e.g. `5s`); the host's invocation deadline applies too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// What a failure (after retries) does to the run.
    #[serde(default)]
    pub on_failure: OnFailure,
}

/// Retries of a failed step, with exponential backoff.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetrySpec {
    /// Attempts after the first.
    pub limit: u32,
    /// The wait before the first retry (default 1s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<String>,
    /// What each wait is multiplied by (default 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub factor: Option<f64>,
    /// The longest wait (default 5m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_backoff: Option<String>,
}

/// What a step's final failure does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnFailure {
    /// The run fails and starts no further step.
    #[default]
    Fail,
    /// The run goes on: dependents run and can read `steps.<name>.error`.
    Continue,
}

/// A reference inside `${{ ... }}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Root {
    /// `inputs.<name>`
    Input(String),
    /// `steps.<name>.output`
    Output(String),
    /// `steps.<name>.error`
    Error(String),
    /// `run.id`
    RunId,
    /// `workflow.name`
    WorkflowName,
}

/// A step into a value: a field or an array index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    /// `.field`
    Field(String),
    /// `[n]`
    Index(usize),
}

/// A parsed reference: where it starts and the path into it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// Where the value comes from.
    pub root: Root,
    /// The path into it.
    pub path: Vec<Segment>,
    /// The expression as written.
    pub text: String,
}

/// A value with references, ready to render.
#[derive(Debug, Clone, PartialEq)]
pub enum Template {
    /// A value without references.
    Literal(Value),
    /// A string that is exactly one reference: renders to the referenced value itself.
    Whole(Reference),
    /// A string mixing text and references: renders to a string.
    Text(Vec<Piece>),
    /// An array.
    Array(Vec<Template>),
    /// An object.
    Object(Vec<(String, Template)>),
}

/// Part of a [`Template::Text`].
#[derive(Debug, Clone, PartialEq)]
pub enum Piece {
    /// Text as written.
    Text(String),
    /// A reference, rendered as text.
    Ref(Reference),
}

/// What references resolve against.
pub trait Scope {
    /// A workflow input.
    fn input(&self, name: &str) -> Option<&Value>;
    /// A finished step's output (`Null` when it failed and the run went on).
    fn output(&self, step: &str) -> Option<&Value>;
    /// A step's error message, if it failed.
    fn error(&self, step: &str) -> Option<&str>;
    /// The run ID.
    fn run_id(&self) -> &str;
    /// The workflow name.
    fn workflow(&self) -> &str;
}

impl Template {
    /// Parses `${{ ... }}` references in every string of `value`.
    pub fn parse(value: &Value) -> Result<Template, SpecError> {
        Ok(match value {
            Value::String(s) => parse_text(s)?,
            Value::Array(items) => Template::Array(
                items
                    .iter()
                    .map(Template::parse)
                    .collect::<Result<_, _>>()?,
            ),
            Value::Object(map) => Template::Object(
                map.iter()
                    .map(|(k, v)| Ok((k.clone(), Template::parse(v)?)))
                    .collect::<Result<_, SpecError>>()?,
            ),
            other => Template::Literal(other.clone()),
        })
    }

    /// Every reference in the template.
    pub fn references(&self) -> Vec<&Reference> {
        let mut out = Vec::new();
        self.collect(&mut out);
        out
    }

    fn collect<'a>(&'a self, out: &mut Vec<&'a Reference>) {
        match self {
            Template::Literal(_) => {}
            Template::Whole(r) => out.push(r),
            Template::Text(pieces) => out.extend(pieces.iter().filter_map(|p| match p {
                Piece::Ref(r) => Some(r),
                Piece::Text(_) => None,
            })),
            Template::Array(items) => items.iter().for_each(|t| t.collect(out)),
            Template::Object(fields) => fields.iter().for_each(|(_, t)| t.collect(out)),
        }
    }

    /// Renders the template; `Err` names the reference that could not be resolved.
    pub fn render(&self, scope: &dyn Scope) -> Result<Value, String> {
        Ok(match self {
            Template::Literal(v) => v.clone(),
            Template::Whole(r) => resolve(r, scope)?,
            Template::Text(pieces) => {
                let mut s = String::new();
                for p in pieces {
                    match p {
                        Piece::Text(t) => s.push_str(t),
                        Piece::Ref(r) => match resolve(r, scope)? {
                            Value::String(v) => s.push_str(&v),
                            Value::Null => {}
                            other => s.push_str(&other.to_string()),
                        },
                    }
                }
                Value::String(s)
            }
            Template::Array(items) => Value::Array(
                items
                    .iter()
                    .map(|t| t.render(scope))
                    .collect::<Result<_, _>>()?,
            ),
            Template::Object(fields) => Value::Object(
                fields
                    .iter()
                    .map(|(k, t)| Ok((k.clone(), t.render(scope)?)))
                    .collect::<Result<_, String>>()?,
            ),
        })
    }
}

fn resolve(r: &Reference, scope: &dyn Scope) -> Result<Value, String> {
    let base = match &r.root {
        Root::Input(name) => scope
            .input(name)
            .cloned()
            .ok_or_else(|| format!("`{}`: the input `{name}` has no value", r.text))?,
        Root::Output(step) => scope
            .output(step)
            .cloned()
            .ok_or_else(|| format!("`{}`: step `{step}` has no output yet", r.text))?,
        Root::Error(step) => scope
            .error(step)
            .map_or(Value::Null, |e| Value::String(e.to_string())),
        Root::RunId => Value::String(scope.run_id().to_string()),
        Root::WorkflowName => Value::String(scope.workflow().to_string()),
    };
    let mut value = &base;
    for seg in &r.path {
        value = match (seg, value) {
            (Segment::Field(f), Value::Object(map)) => map
                .get(f)
                .ok_or_else(|| format!("`{}`: no field `{f}` in {}", r.text, kind(value)))?,
            (Segment::Index(i), Value::Array(items)) => items.get(*i).ok_or_else(|| {
                format!(
                    "`{}`: index {i} is past the end ({} items)",
                    r.text,
                    items.len()
                )
            })?,
            (Segment::Field(f), other) => {
                return Err(format!(
                    "`{}`: cannot take `.{f}` of {}",
                    r.text,
                    kind(other)
                ));
            }
            (Segment::Index(i), other) => {
                return Err(format!(
                    "`{}`: cannot take `[{i}]` of {}",
                    r.text,
                    kind(other)
                ));
            }
        };
    }
    Ok(value.clone())
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn parse_text(s: &str) -> Result<Template, SpecError> {
    let mut pieces = Vec::new();
    let mut rest = s;
    while let Some(start) = rest.find("${{") {
        if start > 0 {
            pieces.push(Piece::Text(rest[..start].to_string()));
        }
        let after = &rest[start + 3..];
        let end = after
            .find("}}")
            .ok_or_else(|| err(format!("unclosed `${{{{` in {s:?}")))?;
        pieces.push(Piece::Ref(parse_reference(after[..end].trim())?));
        rest = &after[end + 2..];
    }
    if !rest.is_empty() {
        pieces.push(Piece::Text(rest.to_string()));
    }
    Ok(match pieces.as_slice() {
        [] => Template::Literal(Value::String(String::new())),
        [Piece::Text(t)] => Template::Literal(Value::String(t.clone())),
        [Piece::Ref(r)] => Template::Whole(r.clone()),
        _ => Template::Text(pieces),
    })
}

/// Parses `inputs.x`, `steps.s.output.field[0]`, `steps.s.error`, `run.id`, `workflow.name`.
pub fn parse_reference(text: &str) -> Result<Reference, SpecError> {
    let bad = |why: &str| {
        err(format!(
            "bad reference `${{{{ {text} }}}}`: {why} (expected inputs.NAME, \
             steps.NAME.output[.FIELD...], steps.NAME.error, run.id or workflow.name)"
        ))
    };
    let mut segments = Vec::new();
    let mut chars = text.char_indices().peekable();
    let mut current = String::new();
    while let Some((_, c)) = chars.next() {
        match c {
            '.' => {
                if current.is_empty() && !matches!(segments.last(), Some(Segment::Index(_))) {
                    return Err(bad("an empty name"));
                }
                if !current.is_empty() {
                    segments.push(Segment::Field(std::mem::take(&mut current)));
                }
            }
            '[' => {
                if !current.is_empty() {
                    segments.push(Segment::Field(std::mem::take(&mut current)));
                }
                let mut digits = String::new();
                loop {
                    match chars.next() {
                        Some((_, ']')) => break,
                        Some((_, d)) if d.is_ascii_digit() => digits.push(d),
                        _ => return Err(bad("an index must be digits in brackets")),
                    }
                }
                let index = digits.parse().map_err(|_| bad("an empty index"))?;
                segments.push(Segment::Index(index));
            }
            c if c.is_alphanumeric() || c == '_' || c == '-' => current.push(c),
            _ => return Err(bad(&format!("unexpected character {c:?}"))),
        }
    }
    if !current.is_empty() {
        segments.push(Segment::Field(current));
    }
    let field = |i: usize| match segments.get(i) {
        Some(Segment::Field(f)) => Some(f.clone()),
        _ => None,
    };
    let (root, skip) = match field(0).as_deref() {
        Some("inputs") => (
            Root::Input(field(1).ok_or_else(|| bad("`inputs` needs a name"))?),
            2,
        ),
        Some("steps") => {
            let step = field(1).ok_or_else(|| bad("`steps` needs a step name"))?;
            match field(2).as_deref() {
                Some("output") => (Root::Output(step), 3),
                Some("error") if segments.len() == 3 => (Root::Error(step), 3),
                Some("error") => return Err(bad("`error` is a string; it has no fields")),
                _ => return Err(bad("a step reference continues with `.output` or `.error`")),
            }
        }
        Some("run") if field(1).as_deref() == Some("id") && segments.len() == 2 => (Root::RunId, 2),
        Some("workflow") if field(1).as_deref() == Some("name") && segments.len() == 2 => {
            (Root::WorkflowName, 2)
        }
        _ => return Err(bad("unknown root")),
    };
    Ok(Reference {
        root,
        path: segments.into_iter().skip(skip).collect(),
        text: text.to_string(),
    })
}

/// A step ready to schedule: its spec with durations and templates parsed.
#[derive(Debug, Clone)]
pub struct Step {
    /// The spec as written.
    pub spec: StepSpec,
    /// The request template.
    pub input: Template,
    /// The timeout of one attempt.
    pub timeout: Option<Duration>,
    /// The backoff before retry `n` (1-based) is `backoff * factor^(n-1)`, at most `max`.
    pub backoff: (Duration, f64, Duration),
}

impl Step {
    /// The wait before retry number `retry` (1 for the first retry).
    pub fn backoff(&self, retry: u32) -> Duration {
        let (base, factor, max) = self.backoff;
        let exp = i32::try_from(retry.saturating_sub(1)).unwrap_or(i32::MAX);
        let secs = base.as_secs_f64() * factor.powi(exp);
        if secs.is_finite() && secs < max.as_secs_f64() {
            Duration::from_secs_f64(secs)
        } else {
            max
        }
    }

    /// Attempts allowed in all (the first plus retries).
    pub fn max_attempts(&self) -> u32 {
        self.spec
            .retry
            .as_ref()
            .map_or(0, |r| r.limit)
            .saturating_add(1)
    }
}

/// A checked workflow: the spec, its steps parsed, in an order that respects `depends`.
#[derive(Debug, Clone)]
pub struct Workflow {
    /// The spec as written (stored with each run).
    pub spec: WorkflowSpec,
    /// Steps by name.
    pub steps: HashMap<String, Step>,
    /// Step names, each after all it depends on.
    pub order: Vec<String>,
    /// The outputs template.
    pub outputs: Option<Template>,
    /// The spec's stored form and its key, computed on first use.
    stored: std::sync::OnceLock<Result<(String, Vec<u8>), String>>,
}

fn check_name(what: &str, name: &str) -> Result<(), SpecError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(err(format!(
            "{what} {name:?}: use 1 to {MAX_NAME} letters, digits, `_` or `-`"
        )))
    }
}

fn duration(what: &str, s: &str) -> Result<Duration, SpecError> {
    humantime::parse_duration(s).map_err(|e| {
        err(format!(
            "{what}: {s:?} is not a duration ({e}; e.g. 500ms, 10s, 2m)"
        ))
    })
}

impl Workflow {
    /// Parses and checks a YAML spec. Errors name the place (with a line for YAML errors).
    pub fn from_yaml(text: &str) -> Result<Workflow, SpecError> {
        let spec: WorkflowSpec = serde_norway::from_str(text).map_err(|e| {
            let at = e
                .location()
                .map_or(String::new(), |l| format!("line {}: ", l.line()));
            err(format!("{at}{e}"))
        })?;
        Workflow::check(spec)
    }

    /// Checks a spec sent as JSON: the spec itself as an object, or its YAML text.
    pub fn from_value(value: &Value) -> Result<Workflow, SpecError> {
        match value {
            Value::String(yaml) => Workflow::from_yaml(yaml),
            other => {
                let spec: WorkflowSpec = serde_json::from_value(other.clone())
                    .map_err(|e| err(format!("not a workflow spec: {e}")))?;
                Workflow::check(spec)
            }
        }
    }

    /// Reads and checks a spec file.
    pub fn from_file(path: &Path) -> Result<Workflow, SpecError> {
        let text =
            std::fs::read_to_string(path).map_err(|e| err(format!("{}: {e}", path.display())))?;
        Workflow::from_yaml(&text).map_err(|e| err(format!("{}: {}", path.display(), e.0)))
    }

    /// Checks a spec: version, names, references, dependencies and their order.
    pub fn check(spec: WorkflowSpec) -> Result<Workflow, SpecError> {
        if spec.version != VERSION {
            return Err(err(format!(
                "version {} is not supported (this host reads version {VERSION})",
                spec.version
            )));
        }
        check_name("workflow name", &spec.name)?;
        for name in spec.inputs.keys() {
            check_name("input", name)?;
        }
        if spec.steps.is_empty() {
            return Err(err("a workflow needs at least one step"));
        }
        let mut steps = HashMap::new();
        for (i, s) in spec.steps.iter().enumerate() {
            let at = |m: String| err(format!("steps[{i}] ({}): {m}", s.name));
            check_name("step name", &s.name).map_err(|e| at(e.0))?;
            if s.actor.trim().is_empty() {
                return Err(at("`actor` is empty".into()));
            }
            if s.operation.trim().is_empty() {
                return Err(at("`operation` is empty".into()));
            }
            let input = match &s.input {
                Some(v) => Template::parse(v).map_err(|e| at(e.0))?,
                None => Template::Literal(Value::Object(Default::default())),
            };
            let timeout = s
                .timeout
                .as_deref()
                .map(|t| duration("timeout", t))
                .transpose()
                .map_err(|e| at(e.0))?;
            let backoff = match &s.retry {
                None => (Duration::from_secs(1), 2.0, Duration::from_secs(300)),
                Some(r) => {
                    let base = r
                        .backoff
                        .as_deref()
                        .map_or(Ok(Duration::from_secs(1)), |b| duration("retry.backoff", b))
                        .map_err(|e| at(e.0))?;
                    let max = r
                        .max_backoff
                        .as_deref()
                        .map_or(Ok(Duration::from_secs(300)), |b| {
                            duration("retry.max_backoff", b)
                        })
                        .map_err(|e| at(e.0))?;
                    let factor = r.factor.unwrap_or(2.0);
                    if !(1.0..=100.0).contains(&factor) {
                        return Err(at(format!("retry.factor {factor} is outside 1 to 100")));
                    }
                    (base, factor, max)
                }
            };
            let step = Step {
                spec: s.clone(),
                input,
                timeout,
                backoff,
            };
            if steps.insert(s.name.clone(), step).is_some() {
                return Err(err(format!("two steps are named {:?}", s.name)));
            }
        }
        for s in &spec.steps {
            for d in &s.depends {
                if !steps.contains_key(d) {
                    return Err(err(format!(
                        "step {:?} depends on {d:?}, which is not a step of this workflow",
                        s.name
                    )));
                }
                if d == &s.name {
                    return Err(err(format!("step {:?} depends on itself", s.name)));
                }
            }
        }
        let order = topological(&spec.steps)?;
        // Every reference must name an input, or a step this one (transitively) follows.
        let ancestors = ancestors(&spec.steps, &order);
        for s in &spec.steps {
            let template = &steps[&s.name].input;
            check_references(
                &format!("step {:?}", s.name),
                template,
                &spec,
                &steps,
                Some(&ancestors[&s.name]),
            )?;
        }
        let outputs = spec
            .outputs
            .as_ref()
            .map(Template::parse)
            .transpose()
            .map_err(|e| err(format!("outputs: {}", e.0)))?;
        if let Some(t) = &outputs {
            check_references("outputs", t, &spec, &steps, None)?;
        }
        Ok(Workflow {
            spec,
            steps,
            order,
            outputs,
            stored: std::sync::OnceLock::new(),
        })
    }

    /// The spec as stored with its runs (JSON) and its store key, `spec.<hash>`: computed
    /// once per checked workflow (change `spec` only through [`Workflow::check`]).
    pub fn stored_spec(&self) -> Result<(&str, &[u8]), String> {
        let stored = self.stored.get_or_init(|| {
            let bytes = serde_json::to_vec(&self.spec).map_err(|e| e.to_string())?;
            let key = format!("spec.{}", &blake3::hash(&bytes).to_hex()[..32]);
            Ok((key, bytes))
        });
        match stored {
            Ok((key, bytes)) => Ok((key.as_str(), bytes.as_slice())),
            Err(e) => Err(e.clone()),
        }
    }

    /// The inputs of a run: those given, plus defaults; an unknown or missing one is an error.
    pub fn resolve_inputs(
        &self,
        given: BTreeMap<String, Value>,
    ) -> Result<BTreeMap<String, Value>, SpecError> {
        for name in given.keys() {
            if !self.spec.inputs.contains_key(name) {
                let known: Vec<&str> = self.spec.inputs.keys().map(String::as_str).collect();
                return Err(err(format!(
                    "workflow {:?} has no input {name:?} (its inputs: {})",
                    self.spec.name,
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                )));
            }
        }
        let mut out = given;
        for (name, input) in &self.spec.inputs {
            if !out.contains_key(name) {
                match &input.default {
                    Some(v) => {
                        out.insert(name.clone(), v.clone());
                    }
                    None => {
                        return Err(err(format!(
                            "the input {name:?} is required and has no default: give it \
                             with the run's inputs (a {name:?} field in the JSON inputs of a \
                             trigger message or HTTP request; --input {name}=VALUE on the \
                             command line)"
                        )));
                    }
                }
            }
        }
        Ok(out)
    }
}

fn check_references(
    what: &str,
    template: &Template,
    spec: &WorkflowSpec,
    steps: &HashMap<String, Step>,
    ancestors: Option<&BTreeSet<String>>,
) -> Result<(), SpecError> {
    for r in template.references() {
        let step = match &r.root {
            Root::Input(name) if !spec.inputs.contains_key(name) => {
                return Err(err(format!(
                    "{what}: `{}` names the input {name:?}, which the workflow does not declare",
                    r.text
                )));
            }
            Root::Output(s) | Root::Error(s) => s,
            _ => continue,
        };
        if !steps.contains_key(step) {
            return Err(err(format!(
                "{what}: `{}` names the step {step:?}, which does not exist",
                r.text
            )));
        }
        if let Some(before) = ancestors
            && !before.contains(step)
        {
            return Err(err(format!(
                "{what}: `{}` reads step {step:?}, which it does not depend on (add it to \
                 `depends`)",
                r.text
            )));
        }
    }
    Ok(())
}

/// Orders the steps so each follows its dependencies; a cycle is an error that names it.
fn topological(steps: &[StepSpec]) -> Result<Vec<String>, SpecError> {
    let mut remaining: BTreeMap<&str, BTreeSet<&str>> = steps
        .iter()
        .map(|s| {
            (
                s.name.as_str(),
                s.depends.iter().map(String::as_str).collect(),
            )
        })
        .collect();
    let mut order = Vec::new();
    while !remaining.is_empty() {
        let ready: Vec<&str> = remaining
            .iter()
            .filter(|(_, deps)| deps.is_empty())
            .map(|(name, _)| *name)
            .collect();
        if ready.is_empty() {
            return Err(err(format!(
                "the steps depend on each other in a cycle: {}",
                cycle(&remaining)
            )));
        }
        for name in ready {
            remaining.remove(name);
            for deps in remaining.values_mut() {
                deps.remove(name);
            }
            order.push(name.to_string());
        }
    }
    Ok(order)
}

/// One cycle among steps that all still wait on something, as `a -> b -> a`.
fn cycle(waiting: &BTreeMap<&str, BTreeSet<&str>>) -> String {
    let Some(start) = waiting.keys().next() else {
        return String::new();
    };
    let mut path = vec![*start];
    let mut at = *start;
    loop {
        let Some(next) = waiting[at].iter().find(|d| waiting.contains_key(*d)) else {
            return path.join(" -> ");
        };
        if let Some(pos) = path.iter().position(|p| p == next) {
            let mut cyc: Vec<&str> = path[pos..].to_vec();
            cyc.push(next);
            return cyc.join(" -> ");
        }
        path.push(next);
        at = next;
    }
}

fn ancestors(steps: &[StepSpec], order: &[String]) -> HashMap<String, BTreeSet<String>> {
    let by_name: HashMap<&str, &StepSpec> = steps.iter().map(|s| (s.name.as_str(), s)).collect();
    let mut out: HashMap<String, BTreeSet<String>> = HashMap::new();
    for name in order {
        let mut set = BTreeSet::new();
        for d in &by_name[name.as_str()].depends {
            set.insert(d.clone());
            set.extend(out[d].iter().cloned());
        }
        out.insert(name.clone(), set);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wf(steps: &str) -> Result<Workflow, SpecError> {
        Workflow::from_yaml(&format!(
            "version: 1\nname: t\ninputs:\n  doc: {{}}\n  n: {{default: 3}}\nsteps:\n{steps}"
        ))
    }

    #[test]
    fn a_dag_is_ordered_and_references_render() {
        let w = wf(r#"
  - {name: c, actor: x, operation: o, depends: [a, b], input: {v: "${{ steps.a.output.k[1] }}", s: "n=${{ inputs.n }} at ${{ run.id }}"}}
  - {name: a, actor: x, operation: o, input: "${{ inputs.doc }}"}
  - {name: b, actor: x, operation: o, depends: [a]}
"#)
        .unwrap();
        assert_eq!(w.order, ["a", "b", "c"]);
        struct S(Value, BTreeMap<String, Value>);
        impl Scope for S {
            fn input(&self, n: &str) -> Option<&Value> {
                self.1.get(n)
            }
            fn output(&self, s: &str) -> Option<&Value> {
                (s == "a").then_some(&self.0)
            }
            fn error(&self, _: &str) -> Option<&str> {
                None
            }
            fn run_id(&self) -> &str {
                "r1"
            }
            fn workflow(&self) -> &str {
                "t"
            }
        }
        let inputs = w
            .resolve_inputs([("doc".to_string(), Value::from("hi"))].into())
            .unwrap();
        let scope = S(serde_json::json!({"k": [1, {"z": true}]}), inputs);
        assert_eq!(
            w.steps["c"].input.render(&scope).unwrap(),
            serde_json::json!({"v": {"z": true}, "s": "n=3 at r1"})
        );
        assert_eq!(
            w.steps["a"].input.render(&scope).unwrap(),
            Value::from("hi")
        );
    }

    #[test]
    fn errors_are_precise() {
        let e = |s: &str| wf(s).unwrap_err().0;
        assert!(
            e("  - {name: a, actor: x, operation: o, depends: [zz]}")
                .contains("depends on \"zz\", which is not a step")
        );
        assert!(e("  - {name: a, actor: x, operation: o, depends: [b]}\n  - {name: b, actor: x, operation: o, depends: [a]}").contains("cycle: a -> b -> a"));
        assert!(e("  - {name: a, actor: x, operation: o, input: \"${{ steps.b.output }}\"}\n  - {name: b, actor: x, operation: o}").contains("does not depend on"));
        assert!(
            e("  - {name: a, actor: x, operation: o, input: \"${{ inputs.nope }}\"}")
                .contains("does not declare")
        );
        assert!(
            e("  - {name: a, actor: x, operation: o, input: \"${{ stepz.b }}\"}")
                .contains("unknown root")
        );
        assert!(
            e("  - {name: a, actor: x, operation: o, timeout: soon}").contains("not a duration")
        );
        assert!(e("  - {name: a, actor: x, operation: o, colour: red}").contains("line"));
        assert!(
            e("  - {name: a, actor: x, operation: o}\n  - {name: a, actor: y, operation: o}")
                .contains("two steps")
        );
        assert!(e("  - {name: a b, actor: x, operation: o}").contains("step name"));
        let w = wf("  - {name: a, actor: x, operation: o}").unwrap();
        // Worded for any caller (a trigger's NATS client, an HTTP client, the CLI).
        let missing = w.resolve_inputs(BTreeMap::new()).unwrap_err().0;
        assert!(missing.contains("\"doc\" is required"), "{missing}");
        assert!(
            missing.contains("a \"doc\" field in the JSON inputs of a trigger message"),
            "{missing}"
        );
    }

    #[test]
    fn backoff_grows_to_its_ceiling() {
        let w = wf("  - {name: a, actor: x, operation: o, retry: {limit: 5, backoff: 100ms, factor: 3, max_backoff: 1s}}").unwrap();
        let s = &w.steps["a"];
        assert_eq!(s.max_attempts(), 6);
        assert_eq!(s.backoff(1), Duration::from_millis(100));
        assert_eq!(s.backoff(2), Duration::from_millis(300));
        assert_eq!(s.backoff(3), Duration::from_millis(900));
        assert_eq!(s.backoff(4), Duration::from_secs(1));
    }
}
