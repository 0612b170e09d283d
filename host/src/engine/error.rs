//! Errors of loading and invoking actors. Each names what happened and, where one exists, the
//! limit that stopped it, so the operator knows which knob to turn.

use std::time::Duration;

/// Why a module could not be turned into a runnable actor.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// The module failed verification of its signed claims.
    #[error(transparent)]
    Claims(#[from] sigil_claims::Error),

    /// The claims verified, and the host's policy refused to start the actor.
    #[error(transparent)]
    Denied(#[from] crate::policy::PolicyDenied),

    /// The module is not valid WebAssembly or uses features the engine does not enable.
    #[error("module does not compile: {message}")]
    Compile {
        /// The compiler's message.
        message: String,
    },

    /// The module imports something the host does not provide.
    #[error(
        "module imports `{module}.{name}` ({kind}), which Sigil does not provide: an actor \
         reaches the world only through the waPC imports of module `wapc` and the \
         capabilities in its claims"
    )]
    UnsupportedImport {
        /// The import's module name.
        module: String,
        /// The import's field name.
        name: String,
        /// What kind of item it imports.
        kind: String,
    },

    /// A waPC import has the wrong signature.
    #[error("module imports `wapc.{name}` with type {found}, but waPC defines it as {expected}")]
    ImportSignature {
        /// The import's name.
        name: String,
        /// Its type in the module.
        found: String,
        /// Its type in the waPC ABI.
        expected: String,
    },

    /// A WASI module imports something other than WASI preview 1.
    #[error(
        "module imports `{module}.{name}`, which Sigil does not provide to WASI modules: a \
         WASI step may import only `wasi_snapshot_preview1` and `wasi_experimental_http` \
         functions (build for wasm32-wasip1)"
    )]
    UnsupportedWasiImport {
        /// The import's module name.
        module: String,
        /// The import's field name.
        name: String,
    },

    /// A required export is missing or has the wrong type.
    #[error("module does not export {what}: {hint}")]
    MissingExport {
        /// What is missing.
        what: String,
        /// How to fix it.
        hint: &'static str,
    },

    /// The module needs more memory up front than the limit allows.
    #[error(
        "module needs {requested} bytes of memory at start, above the {limit}-byte limit \
         (raise limits.max_memory or shrink the module's initial memory)"
    )]
    MemoryTooLarge {
        /// Bytes the module declares as its minimum.
        requested: u64,
        /// The configured limit.
        limit: usize,
    },

    /// The module has more tables, memories or table elements than the pool allows.
    #[error("module exceeds the engine's resource limits: {message}")]
    Resources {
        /// Which limit.
        message: String,
    },

    /// The module file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// The engine could not be configured or used.
    #[error("engine error: {message}")]
    Engine {
        /// What went wrong.
        message: String,
    },

    /// A live update that would not move the actor forward.
    #[error("update of actor {subject} refused: {reason}")]
    Update {
        /// The actor's public key.
        subject: String,
        /// Why (not running here, or a revision not newer than the running one).
        reason: String,
    },
}

/// Why one invocation of an actor failed. The host keeps serving other invocations.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InvocationError {
    /// The wall-clock deadline passed while the actor was running.
    #[error("deadline exceeded: the actor ran longer than its {} limit", humantime::format_duration(*.limit))]
    DeadlineExceeded {
        /// The configured deadline.
        limit: Duration,
    },

    /// The actor used all the fuel it was given.
    #[error("fuel exhausted: the actor executed more than its {limit} units of fuel")]
    FuelExhausted {
        /// The configured fuel.
        limit: u64,
    },

    /// The actor tried to grow its memory beyond the ceiling.
    #[error(
        "memory limit exceeded: the actor asked for {requested} bytes of linear memory, above \
         its {limit}-byte ceiling"
    )]
    MemoryLimitExceeded {
        /// Bytes requested.
        requested: usize,
        /// The ceiling.
        limit: usize,
    },

    /// The actor's call stack overflowed.
    #[error("stack overflow: the actor's call stack exceeded the engine's limit")]
    StackOverflow,

    /// The actor panicked (it reported a message, then trapped).
    #[error("actor panicked: {message}")]
    Panicked {
        /// The panic message the actor reported.
        message: String,
    },

    /// The actor trapped.
    #[error("actor trapped{}: {message}", phase_suffix(.phase))]
    Trap {
        /// Where the trap happened.
        phase: Phase,
        /// The trap and its backtrace, as the engine reports them.
        message: String,
    },

    /// The actor's handler returned an error.
    #[error("actor returned an error: {message}")]
    Guest {
        /// The actor's error message.
        message: String,
    },

    /// A WASI module exited with a non-zero code.
    #[error("the module exited with code {code}{}", stderr_suffix(.stderr))]
    Exit {
        /// The exit code.
        code: i32,
        /// The end of its stderr.
        stderr: String,
    },

    /// A WASI run that failed, with the end of what the module wrote to stderr.
    #[error("{error}{}", stderr_suffix(.stderr))]
    WithStderr {
        /// What ended the run.
        error: Box<InvocationError>,
        /// The end of its stderr.
        stderr: String,
    },

    /// A WASI step did not leave a usable result document.
    #[error("the step's result is unusable: {message}")]
    StepResult {
        /// What is wrong with `/work/result.json`.
        message: String,
    },

    /// The request payload is larger than allowed.
    #[error("request of {size} bytes exceeds the {limit}-byte limit (limits.max_request)")]
    RequestTooLarge {
        /// Payload size.
        size: usize,
        /// The limit.
        limit: usize,
    },

    /// The actor produced a response larger than allowed.
    #[error(
        "response of {size} bytes exceeds the {limit}-byte limit (limits.max_response); \
         the response was discarded"
    )]
    ResponseTooLarge {
        /// Response size.
        size: usize,
        /// The limit.
        limit: usize,
    },

    /// The actor passed a pointer and length outside its own memory.
    #[error(
        "bad waPC pointer: `{function}` was given {len} bytes at address {ptr}, outside the \
         actor's {memory_size}-byte memory"
    )]
    BadGuestPointer {
        /// The waPC function that received it.
        function: &'static str,
        /// The address.
        ptr: u32,
        /// The length.
        len: u32,
        /// The size of the actor's memory.
        memory_size: usize,
    },

    /// The actor broke the waPC protocol in another way.
    #[error("waPC protocol violation: {message}")]
    Protocol {
        /// What it did.
        message: String,
    },

    /// The engine could not create an instance (the host is at its concurrency limit, or out
    /// of resources).
    #[error("cannot create an instance: {message}")]
    Instantiate {
        /// The engine's message.
        message: String,
    },
}

/// Where in an invocation a trap happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Phase {
    /// While instantiating (the module's start function).
    Start,
    /// In an init export (`_start` or `wapc_init`).
    Init(&'static str),
    /// In `__guest_call`.
    Call,
}

fn phase_suffix(phase: &Phase) -> String {
    match phase {
        Phase::Start => " in its start function".into(),
        Phase::Init(name) => format!(" in `{name}`"),
        Phase::Call => String::new(),
    }
}

/// A guest broke the ABI in a host function; raised as the host function's error and turned
/// into an [`InvocationError`] when the call unwinds.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AbiFault {
    #[error("bad pointer")]
    BadPointer {
        function: &'static str,
        ptr: u32,
        len: u32,
        memory_size: usize,
    },
    #[error("response too large")]
    ResponseTooLarge { size: usize, limit: usize },
    #[error("{0}")]
    Protocol(String),
}

fn stderr_suffix(stderr: &str) -> String {
    let stderr = stderr.trim_end();
    if stderr.is_empty() {
        String::new()
    } else {
        format!("; its stderr ends: {stderr}")
    }
}
