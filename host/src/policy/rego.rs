//! Rego policies evaluated in-process with `regorus`.
//!
//! The convention: each decision point has a package, `sigil.start`, `sigil.link` and
//! `sigil.invoke`, whose rule `deny` is a set of reasons (Rego v1, as with OPA's
//! `deny contains msg if { ... }`). An empty or undefined set allows; each reason in a
//! non-empty set is reported. A point whose package no file declares is not restricted.
//!
//! Files are checked when loaded: a syntax or compile error names the file and line, and
//! nothing is loaded. [`RegoPolicy::watch`] re-reads the files periodically and swaps in a
//! new policy when they change and compile; a change that does not compile leaves the last
//! good policy in force and is logged (and kept in [`RegoPolicy::status`]).

use std::path::PathBuf;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock, Weak};
use std::time::Duration;

use regorus::{CompiledPolicy, Engine, Value};

use super::{Caching, Decision, DecisionFuture, DecisionPoint, InputUse, PolicyDecider};

/// Why Rego files could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RegoError {
    /// A file could not be read.
    #[error("cannot read policy file {}: {message}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The operating system's message.
        message: String,
    },
    /// A file does not parse or compile.
    #[error("{}:{line}: {message}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The 1-based line (0 when the error names none).
        line: usize,
        /// The interpreter's message.
        message: String,
    },
    /// The policy as a whole does not compile (a rule across files, a missing `deny`).
    #[error("the Rego policy does not compile: {message}")]
    Compile {
        /// The interpreter's message.
        message: String,
    },
    /// No files were named.
    #[error("no Rego files were given")]
    NoFiles,
}

/// One loaded version of the policy.
struct Loaded {
    sources: Vec<(String, String)>,
    points: [Option<CompiledPolicy>; 3],
    uses: InputUse,
}

fn index(point: DecisionPoint) -> usize {
    match point {
        DecisionPoint::Start => 0,
        DecisionPoint::Link => 1,
        DecisionPoint::Invoke => 2,
    }
}

const POINTS: [DecisionPoint; 3] = [
    DecisionPoint::Start,
    DecisionPoint::Link,
    DecisionPoint::Invoke,
];

/// The outcome of the latest reload, for operators and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReloadStatus {
    /// Bumped by every successful reload that changed the policy.
    pub generation: u64,
    /// Why the files on disk are not in force, if they are not.
    pub last_error: Option<String>,
}

/// Rego files, compiled, with the decision of each point they declare.
pub struct RegoPolicy {
    files: Vec<PathBuf>,
    current: RwLock<Arc<Loaded>>,
    generation: AtomicU64,
    /// The loaded policy's [`InputUse`], readable without the lock on the hot path.
    uses: AtomicU8,
    last_error: Mutex<Option<String>>,
}

impl std::fmt::Debug for RegoPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegoPolicy")
            .field("files", &self.files)
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

impl RegoPolicy {
    /// Reads and compiles `files`; any error names its file and line.
    pub fn load(files: &[PathBuf]) -> Result<Self, RegoError> {
        if files.is_empty() {
            return Err(RegoError::NoFiles);
        }
        let loaded = compile(read_all(files)?)?;
        Ok(Self::with(files.to_vec(), loaded))
    }

    /// Compiles policy texts given as (name, text) pairs; they are never reloaded.
    pub fn from_sources(sources: Vec<(String, String)>) -> Result<Self, RegoError> {
        if sources.is_empty() {
            return Err(RegoError::NoFiles);
        }
        Ok(Self::with(Vec::new(), compile(sources)?))
    }

    fn with(files: Vec<PathBuf>, loaded: Loaded) -> Self {
        RegoPolicy {
            files,
            uses: AtomicU8::new(pack(loaded.uses)),
            current: RwLock::new(Arc::new(loaded)),
            generation: AtomicU64::new(1),
            last_error: Mutex::new(None),
        }
    }

    /// The files the policy was loaded from.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// The decision points the loaded policy restricts.
    pub fn points(&self) -> Vec<DecisionPoint> {
        let loaded = self.loaded();
        POINTS
            .into_iter()
            .filter(|p| loaded.points[index(*p)].is_some())
            .collect()
    }

    /// Re-reads the files; when they changed and compile, puts them in force and drops
    /// every cached decision. Answers whether the policy changed. On error the last good
    /// policy stays in force.
    pub fn reload(&self) -> Result<bool, RegoError> {
        let outcome = read_all(&self.files).and_then(|sources| {
            if sources == self.loaded().sources {
                return Ok(false);
            }
            let loaded = compile(sources)?;
            let uses = pack(loaded.uses);
            let mut current = self.current.write().unwrap_or_else(PoisonError::into_inner);
            *current = Arc::new(loaded);
            // Under the lock, so that uses and generation change together for readers
            // that see the new generation (caches key on both).
            self.uses.store(uses, Ordering::SeqCst);
            self.generation.fetch_add(1, Ordering::SeqCst);
            drop(current);
            Ok(true)
        });
        let mut last_error = self
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match &outcome {
            Ok(true) => {
                tracing::info!(files = ?self.files, "policy reloaded");
                *last_error = None;
            }
            Ok(false) => *last_error = None,
            Err(e) => {
                let message = e.to_string();
                // Said once per distinct error, not at every poll.
                if last_error.as_deref() != Some(message.as_str()) {
                    tracing::error!(
                        error = %message,
                        "policy reload failed; the last good policy stays in force"
                    );
                }
                *last_error = Some(message);
            }
        }
        outcome
    }

    /// The generation in force and the latest reload error, if any.
    pub fn status(&self) -> ReloadStatus {
        ReloadStatus {
            generation: self.generation.load(Ordering::SeqCst),
            last_error: self
                .last_error
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
        }
    }

    /// Checks the files every `interval` on a thread of its own, reloading them when they
    /// change; the thread ends when the policy is dropped.
    pub fn watch(self: &Arc<Self>, interval: Duration) -> std::io::Result<()> {
        if self.files.is_empty() {
            return Ok(());
        }
        let weak: Weak<Self> = Arc::downgrade(self);
        std::thread::Builder::new()
            .name("sigil-policy-watch".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(interval);
                    let Some(policy) = weak.upgrade() else { break };
                    let _ = policy.reload();
                }
            })
            .map(|_| ())
    }

    fn loaded(&self) -> Arc<Loaded> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn evaluate(&self, point: DecisionPoint, input: &serde_json::Value) -> Decision {
        let loaded = self.loaded();
        let Some(compiled) = &loaded.points[index(point)] else {
            return Decision::Allow;
        };
        match compiled.eval_with_input(Value::from(input.clone())) {
            Ok(value) => interpret(point, &value),
            // Fail closed: a policy that cannot answer does not allow.
            Err(e) => Decision::Deny(format!(
                "the sigil.{point} policy failed to evaluate: {}",
                tidy(&e.to_string())
            )),
        }
    }
}

impl PolicyDecider for RegoPolicy {
    fn describe(&self) -> String {
        if self.files.is_empty() {
            "Rego policy".to_string()
        } else {
            let names: Vec<String> = self.files.iter().map(|f| f.display().to_string()).collect();
            format!("Rego policy {}", names.join(", "))
        }
    }

    fn decide<'a>(
        &'a self,
        point: DecisionPoint,
        input: &'a serde_json::Value,
    ) -> DecisionFuture<'a> {
        Box::pin(std::future::ready(self.evaluate(point, input)))
    }

    fn decide_blocking(&self, point: DecisionPoint, input: &serde_json::Value) -> Decision {
        self.evaluate(point, input)
    }

    fn generation(&self) -> u64 {
        self.generation.load(Ordering::Relaxed)
    }

    fn caching(&self) -> Caching {
        // Without time builtins or external data, the answer is a function of the input:
        // it holds until the files change.
        Caching::UntilChanged(unpack(self.uses.load(Ordering::SeqCst)))
    }
}

fn pack(uses: InputUse) -> u8 {
    u8::from(uses.payload_size) | (u8::from(uses.workflow) << 1)
}

fn unpack(bits: u8) -> InputUse {
    InputUse {
        payload_size: bits & 1 != 0,
        workflow: bits & 2 != 0,
    }
}

/// The answer a `deny` value stands for.
fn interpret(point: DecisionPoint, value: &Value) -> Decision {
    let reasons: Vec<String> = match value {
        Value::Undefined | Value::Null | Value::Bool(false) => return Decision::Allow,
        Value::Bool(true) => vec![format!("denied by the sigil.{point} policy")],
        Value::String(s) => vec![s.to_string()],
        Value::Set(items) => items.iter().map(reason).collect(),
        Value::Array(items) => items.iter().map(reason).collect(),
        other => {
            return Decision::Deny(format!(
                "the sigil.{point} policy's deny is {other}, not a set of reasons"
            ));
        }
    };
    if reasons.is_empty() {
        Decision::Allow
    } else {
        Decision::Deny(reasons.join("; "))
    }
}

fn reason(value: &Value) -> String {
    match value {
        Value::String(s) => s.to_string(),
        other => other.to_string(),
    }
}

/// The interpreter's multi-line report on one line: the error, then where it is.
fn tidy(message: &str) -> String {
    let line_after = |prefix: &str| {
        message
            .lines()
            .find_map(|l| l.trim().strip_prefix(prefix))
            .map(str::trim)
    };
    match (line_after("error:"), line_after("-->")) {
        (Some(error), Some(at)) => format!("{error} (at {at})"),
        (Some(error), None) => error.to_string(),
        _ => message.split_whitespace().collect::<Vec<_>>().join(" "),
    }
}

fn read_all(files: &[PathBuf]) -> Result<Vec<(String, String)>, RegoError> {
    files
        .iter()
        .map(|path| {
            std::fs::read_to_string(path)
                .map(|text| (path.display().to_string(), text))
                .map_err(|e| RegoError::Read {
                    path: path.clone(),
                    message: e.to_string(),
                })
        })
        .collect()
}

fn compile(sources: Vec<(String, String)>) -> Result<Loaded, RegoError> {
    let mut engine = Engine::new();
    for (name, text) in &sources {
        engine
            .add_policy(name.clone(), text.clone())
            .map_err(|e| invalid(name, &e.to_string()))?;
    }
    let packages = engine.get_packages().map_err(|e| RegoError::Compile {
        message: e.to_string(),
    })?;
    let mut points: [Option<CompiledPolicy>; 3] = [None, None, None];
    for point in POINTS {
        let package = format!("data.sigil.{point}");
        if !packages.contains(&package) {
            continue;
        }
        let rule = format!("{package}.deny");
        let compiled = engine
            .clone()
            .compile_with_entrypoint(&rule.as_str().into())
            .map_err(|e| compile_error(&sources, &e.to_string(), point, &rule))?;
        points[index(point)] = Some(compiled);
    }
    let uses = input_use(&sources);
    Ok(Loaded {
        sources,
        points,
        uses,
    })
}

/// A parse error, located: the interpreter's messages carry `file:line:column`.
fn invalid(name: &str, message: &str) -> RegoError {
    RegoError::Invalid {
        path: PathBuf::from(name),
        line: line_in(message, name).unwrap_or(0),
        message: tidy(message),
    }
}

fn compile_error(
    sources: &[(String, String)],
    message: &str,
    point: DecisionPoint,
    rule: &str,
) -> RegoError {
    for (name, _) in sources {
        if let Some(line) = line_in(message, name) {
            return RegoError::Invalid {
                path: PathBuf::from(name),
                line,
                message: tidy(message),
            };
        }
    }
    // The interpreter names no file: find the files of the package. When none of them
    // defines `deny`, that is the fault, and the first file's package line is where to
    // fix it.
    let package = format!("sigil.{point}");
    let files: Vec<(&str, usize)> = sources
        .iter()
        .filter_map(|(name, text)| package_line(text, &package).map(|line| (name.as_str(), line)))
        .collect();
    let defines_deny = sources
        .iter()
        .filter(|(_, text)| package_line(text, &package).is_some())
        .any(|(_, text)| defines_rule(text, "deny"));
    if let (Some(&(name, line)), false) = (files.first(), defines_deny) {
        let others = files
            .iter()
            .skip(1)
            .map(|(n, _)| *n)
            .collect::<Vec<_>>()
            .join(", ");
        return RegoError::Invalid {
            path: PathBuf::from(name),
            line,
            message: format!(
                "`package {package}` defines no `deny` rule{}; every package sigil.start, \
                 sigil.link or sigil.invoke needs one, like `deny contains msg if {{ ... }}` \
                 (the interpreter says: {})",
                if others.is_empty() {
                    String::new()
                } else {
                    format!(" in this file or in {others}")
                },
                tidy(message)
            ),
        };
    }
    let named = files.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ");
    RegoError::Compile {
        message: format!(
            "{} (every package sigil.start, sigil.link or sigil.invoke needs a `deny` set \
             rule, as {rule}; package {package} is declared in {named})",
            tidy(message)
        ),
    }
}

/// The 1-based line of `text`'s `package <package>` declaration, if it declares it.
fn package_line(text: &str, package: &str) -> Option<usize> {
    text.lines()
        .position(|l| {
            let mut words = l.split('#').next().unwrap_or("").split_whitespace();
            words.next() == Some("package") && words.next() == Some(package)
        })
        .map(|i| i + 1)
}

/// Whether a line of `text` starts a definition of rule `name` (`deny contains ...`,
/// `deny[msg] ...`, `deny := ...`, `deny if ...`).
fn defines_rule(text: &str, name: &str) -> bool {
    text.lines().any(|l| {
        l.trim_start().strip_prefix(name).is_some_and(|rest| {
            rest.is_empty() || !rest.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
        })
    })
}

/// The line number after `name:` in `message`.
fn line_in(message: &str, name: &str) -> Option<usize> {
    let at = message.find(&format!("{name}:"))? + name.len() + 1;
    let digits: String = message[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// Which optional invocation fields the policy may read. A conservative reading of the
/// text: a field counts as used when its name appears anywhere, and every field counts as
/// used when `input` appears other than as `input.<field>` (iterated, passed whole to a
/// function, aliased), since the policy could then reach any field by a computed name.
fn input_use(sources: &[(String, String)]) -> InputUse {
    let mut use_ = InputUse::default();
    for (_, text) in sources {
        if opaque_input(text) {
            return InputUse::ALL;
        }
        use_.payload_size |= text.contains("payload_size");
        use_.workflow |= text.contains("workflow");
    }
    use_
}

fn opaque_input(text: &str) -> bool {
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut rest = text;
    let mut before: Option<char> = None;
    while let Some(at) = rest.find("input") {
        let prev = rest[..at].chars().next_back().or(before);
        let after = &rest[at + "input".len()..];
        let standalone = !prev.is_some_and(ident) && !after.chars().next().is_some_and(ident);
        if standalone {
            let mut chars = after.chars();
            let field_access = chars.next() == Some('.')
                && chars
                    .next()
                    .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
            if !field_access {
                return true;
            }
        }
        before = Some('t');
        rest = after;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src(text: &str) -> Vec<(String, String)> {
        vec![("p.rego".to_string(), text.to_string())]
    }

    #[test]
    fn input_use_is_conservative() {
        let u = input_use(&src("deny contains \"x\" if input.operation == \"Delete\""));
        assert_eq!(u, InputUse::default());
        let u = input_use(&src("deny contains \"x\" if input.payload_size > 10"));
        assert!(u.payload_size && !u.workflow);
        let u = input_use(&src("deny contains \"x\" if input.workflow.step == \"a\""));
        assert!(u.workflow && !u.payload_size);
        // Computed field names, aliasing and whole-input use reach anything.
        for text in [
            "deny contains k if { some k; input[k] }",
            "deny contains \"x\" if { i := input; i.foo }",
            "deny contains \"x\" if object.get(input, \"a\", 0) == 1",
        ] {
            assert_eq!(input_use(&src(text)), InputUse::ALL, "{text}");
        }
        // `input` inside another word is not the input document.
        assert_eq!(
            input_use(&src(
                "deny contains \"x\" if data.myinputs.a == input.operation"
            )),
            InputUse::default()
        );
    }

    #[test]
    fn deny_values_become_decisions() {
        let p = DecisionPoint::Invoke;
        assert_eq!(interpret(p, &Value::Undefined), Decision::Allow);
        assert_eq!(interpret(p, &Value::new_set()), Decision::Allow);
        assert_eq!(
            interpret(p, &Value::from("no")),
            Decision::Deny("no".into())
        );
        assert!(
            matches!(interpret(p, &Value::from(3)), Decision::Deny(m) if m.contains("not a set"))
        );
    }

    #[test]
    fn errors_name_the_file_and_line() {
        let e = RegoPolicy::from_sources(src(
            "package sigil.invoke\n\ndeny contains \"x\" if {\n  input.a ==\n}\n",
        ))
        .unwrap_err();
        match e {
            RegoError::Invalid {
                path,
                line,
                message,
            } => {
                assert_eq!((path, line), (PathBuf::from("p.rego"), 5));
                assert_eq!(message, "expecting expression (at p.rego:5:1)");
            }
            other => panic!("{other:?}"),
        }
        let e =
            RegoPolicy::from_sources(src("package sigil.invoke\n\nallow := true\n")).unwrap_err();
        assert!(e.to_string().starts_with("p.rego:1: "), "{e}");
        assert!(e.to_string().contains("defines no `deny` rule"), "{e}");
        // With several files, the one of the package is named, at its package line.
        let e = RegoPolicy::from_sources(vec![
            (
                "pol/start.rego".into(),
                "package sigil.start\n\ndeny contains \"x\" if false\n".into(),
            ),
            (
                "pol/nodeny.rego".into(),
                "# no rules\n\npackage sigil.invoke\n\nallowed_ops := {\"Get\"}\n".into(),
            ),
        ])
        .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("pol/nodeny.rego:3: `package sigil.invoke` defines no `deny` rule"),
            "{e}"
        );
    }

    #[test]
    fn a_policy_that_fails_to_evaluate_denies() {
        let p = RegoPolicy::from_sources(src(
            "package sigil.invoke\n\ndeny contains x if { x := 1 / input.zero }\n",
        ))
        .unwrap();
        let d = p.decide_blocking(DecisionPoint::Invoke, &serde_json::json!({"zero": 0}));
        assert!(
            matches!(&d, Decision::Deny(m) if m.starts_with("the sigil.invoke policy failed to evaluate: ") && m.len() > 45),
            "{d:?}"
        );
        // Points without a package are not restricted.
        assert_eq!(p.points(), [DecisionPoint::Invoke]);
        assert!(
            p.decide_blocking(DecisionPoint::Start, &serde_json::json!({}))
                .is_allow()
        );
    }
}
