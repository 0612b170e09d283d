//! The engine: wasmtime tuned for many short invocations, behind the waPC ABI.
//!
//! One [`Engine`] per host: one wasmtime engine with the pooling allocator, one linker with
//! the waPC imports, one thread ticking the epoch that enforces deadlines, and an optional
//! compiled-module cache. [`Engine::prepare`] turns a [`VerifiedModule`] (nothing else) into
//! an [`ActorTemplate`]: compiled, pre-initialized where possible, pre-linked. Each
//! [`Engine::invoke`] then makes a fresh instance from the template, runs one waPC call under
//! the [`Limits`], and drops it, so no state leaks from one invocation to the next.
//!
//! The engine knows bytes and a [`HostCallHandler`]; it knows nothing of claims, links or
//! providers. Each invocation comes in two forms. [`Engine::invoke`] is synchronous: it
//! blocks its thread for the whole call, host calls included, and suits a CLI or a
//! dedicated thread. [`Engine::invoke_async`] is a future to run on an async executor's
//! worker: the guest runs on its own stack, a host call awaits the handler's future instead
//! of blocking, and a guest that computes for long yields to the executor at every epoch
//! tick, so a runaway actor cannot hold a worker; it still traps at its deadline.

mod abi;
mod cache;
mod error;
mod snapshot;
mod stack;
mod wasi;
mod wasi_http;

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sigil_claims::VerifiedModule;
use wasmtime::{
    ExternType, Instance, InstanceAllocationStrategy, InstancePre, Linker, Module, ModuleExport,
    PoolingAllocationConfig, Store, Trap, TypedFunc, UpdateDeadline,
};

use abi::InvocationState;
use error::AbiFault;
pub use error::{InvocationError, LoadError, Phase};
pub use wasi::{Captured, WasiExit, WasiRun, WasiTemplate, is_wasi_command};
pub use wasi_http::HttpGrant;

/// One call from an actor to its host (`__host_call`).
#[derive(Debug, Clone, Copy)]
pub struct HostCall<'a> {
    /// The link name the actor chose (`default` unless it named another).
    pub binding: &'a str,
    /// The capability contract ID (waPC "namespace").
    pub namespace: &'a str,
    /// The operation within the contract.
    pub operation: &'a str,
    /// The request payload.
    pub payload: &'a [u8],
    /// When the invocation's deadline passes; providers should give up by then.
    pub deadline: Instant,
}

/// What an asynchronous host call resolves to: the response, or the message the actor
/// receives as the host error.
pub type HostCallFuture<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<Vec<u8>, String>> + Send + 'a>>;

/// Serves an actor's host calls and console output. The host implements it with the
/// capability gate; the engine only routes to it.
pub trait HostCallHandler: Send + Sync + 'static {
    /// Handles one host call. `Err` is the message the actor receives as the host error.
    fn host_call(&self, call: &HostCall<'_>) -> Result<Vec<u8>, String>;

    /// Handles one host call of an asynchronous invocation ([`Engine::invoke_async`]). The
    /// default answers with [`HostCallHandler::host_call`]; a handler whose calls wait on
    /// I/O overrides it so the executor's worker is not blocked meanwhile.
    fn host_call_async<'a>(&'a self, call: HostCall<'a>) -> HostCallFuture<'a> {
        let result = self.host_call(&call);
        Box::pin(std::future::ready(result))
    }

    /// Receives a line of the actor's console output (`__console_log`).
    fn console_log(&self, _message: &str) {}
}

/// A handler that refuses every host call (used while pre-initializing, and in tests).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoHostCalls;

impl HostCallHandler for NoHostCalls {
    fn host_call(&self, call: &HostCall<'_>) -> Result<Vec<u8>, String> {
        Err(format!(
            "host calls are not available here (refused {} {})",
            call.namespace, call.operation
        ))
    }
}

/// Per-invocation limits. Each default protects the host; raise them deliberately.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Wall-clock time for one invocation (instantiation, init and the call together).
    pub deadline: Duration,
    /// Fuel (roughly, wasm instructions) per invocation; `None` disables fuel metering,
    /// which costs speed. The deadline applies either way.
    pub fuel: Option<u64>,
    /// Ceiling of an instance's linear memory, in bytes.
    pub max_memory: usize,
    /// Ceiling of elements in an instance's tables.
    pub max_table_elements: usize,
    /// Largest request payload accepted, and largest payload an actor may send in a host call.
    pub max_request: usize,
    /// Largest response an actor may return.
    pub max_response: usize,
    /// Console output kept per invocation; the rest is dropped.
    pub max_log_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            deadline: Duration::from_secs(10),
            fuel: None,
            max_memory: 64 << 20,
            max_table_elements: 10_000,
            max_request: 16 << 20,
            max_response: 16 << 20,
            max_log_bytes: 64 << 10,
        }
    }
}

/// How the engine is built. Defaults suit a host serving many short invocations.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Limits applied to every invocation.
    pub limits: Limits,
    /// Instances that may exist at once (the pooling allocator's size); each reserves
    /// address space, not memory.
    pub max_instances: u32,
    /// Pre-initialize actors (run `wapc_init` once and snapshot the result).
    pub snapshot: bool,
    /// Where compiled actors are cached; `None` disables the cache.
    pub cache_dir: Option<PathBuf>,
    /// How often the epoch ticks; deadlines are enforced with this granularity.
    pub epoch_tick: Duration,
    /// Bytes of each instance's memory kept mapped between instances (reset with a memset
    /// rather than page faults). Covers an actor's stack and early heap.
    pub memory_keep_resident: usize,
    /// Native stack for wasm frames, in bytes (deep recursion traps past it).
    pub max_wasm_stack: usize,
    /// How long an asynchronous invocation may compute before it yields to the executor
    /// (rounded up to whole epoch ticks).
    pub yield_interval: Duration,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            limits: Limits::default(),
            max_instances: 256,
            snapshot: true,
            cache_dir: None,
            epoch_tick: Duration::from_millis(1),
            memory_keep_resident: 256 << 10,
            max_wasm_stack: 512 << 10,
            yield_interval: Duration::from_millis(1),
        }
    }
}

/// The wasmtime engine, the waPC linker, the epoch ticker and the compiled-module cache.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

struct Inner {
    wasmtime: wasmtime::Engine,
    linker: Linker<InvocationState>,
    /// The same functions, with `__host_call` awaiting the handler (for `invoke_async`).
    async_linker: Linker<InvocationState>,
    /// WASI preview 1, for WASI command modules (made on first use).
    wasi_linker: std::sync::OnceLock<Result<Linker<InvocationState>, String>>,
    config: EngineConfig,
    cache: Option<cache::ModuleCache>,
    fingerprint: String,
    deadline_ticks: u64,
    yield_ticks: u64,
    clock: Arc<Clock>,
    _ticker: EpochTicker,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

/// Coarse time, in epoch ticks: one atomic load to read, where `Instant::now` is a clock
/// read on every call.
#[derive(Debug)]
pub(crate) struct Clock {
    ticks: AtomicU64,
    tick: Duration,
}

impl Clock {
    fn now(&self) -> u64 {
        self.ticks.load(Ordering::Relaxed)
    }

    /// The tick `ticks` from now.
    pub(crate) fn tick_after(&self, ticks: u64) -> u64 {
        self.now().saturating_add(ticks)
    }

    /// The instant a tick count stands for (for providers, which work in instants).
    pub(crate) fn instant_of(&self, tick: u64) -> Instant {
        let remaining = tick.saturating_sub(self.now());
        let remaining = u32::try_from(remaining).unwrap_or(u32::MAX);
        Instant::now() + self.tick.saturating_mul(remaining)
    }
}

/// Increments the engine's epoch (and the clock) at a fixed interval until dropped.
struct EpochTicker {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl EpochTicker {
    fn start(engine: wasmtime::Engine, clock: Arc<Clock>) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let tick = clock.tick;
        let thread = std::thread::Builder::new()
            .name("sigil-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(tick);
                    engine.increment_epoch();
                    clock.ticks.fetch_add(1, Ordering::Relaxed);
                }
            })?;
        Ok(EpochTicker {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A compiled, pre-linked actor module, ready for fast instantiation.
pub struct ActorTemplate {
    pre: InstancePre<InvocationState>,
    pre_async: InstancePre<InvocationState>,
    guest_call: ModuleExport,
    memory: ModuleExport,
    stack_pointer: Option<ModuleExport>,
    init: Vec<(&'static str, ModuleExport)>,
    info: TemplateInfo,
}

/// How a template was produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TemplateInfo {
    /// Loaded from the compiled-module cache rather than compiled.
    pub from_cache: bool,
    /// Pre-initialized: `wapc_init` already ran and its result is part of the module.
    pub snapshot: bool,
}

impl ActorTemplate {
    /// How the template was produced.
    pub fn info(&self) -> TemplateInfo {
        self.info
    }

    /// Records a new instance's memory and stack pointer in its store, and returns the init
    /// exports still to run.
    fn bind(
        &self,
        store: &mut Store<InvocationState>,
        instance: &Instance,
    ) -> Vec<(&'static str, TypedFunc<(), ()>)> {
        let memory = instance
            .get_module_export(&mut *store, &self.memory)
            .and_then(wasmtime::Extern::into_memory);
        store.data_mut().memory = memory;
        store.data_mut().stack_pointer = self.stack_pointer.as_ref().and_then(|sp| {
            instance
                .get_module_export(&mut *store, sp)
                .and_then(wasmtime::Extern::into_global)
        });
        self.init
            .iter()
            .filter_map(|(name, idx)| {
                let f = instance
                    .get_module_export(&mut *store, idx)
                    .and_then(wasmtime::Extern::into_func)
                    .and_then(|f| f.typed::<(), ()>(&*store).ok())?;
                Some((*name, f))
            })
            .collect()
    }

    /// The instance's typed `__guest_call`.
    fn guest_call(
        &self,
        store: &mut Store<InvocationState>,
        instance: &Instance,
    ) -> Result<GuestCall, InvocationError> {
        instance
            .get_module_export(&mut *store, &self.guest_call)
            .and_then(wasmtime::Extern::into_func)
            .and_then(|f| f.typed::<(i32, i32), i32>(&*store).ok())
            .ok_or_else(|| InvocationError::Protocol {
                message: "`__guest_call` is missing from the instance".into(),
            })
    }
}

impl std::fmt::Debug for ActorTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ActorTemplate")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

/// The typed `__guest_call` export.
type GuestCall = TypedFunc<(i32, i32), i32>;

const INIT_EXPORTS: [&str; 2] = ["_start", snapshot::INIT];

impl Engine {
    /// Builds an engine. Fails only if wasmtime refuses the configuration or the epoch
    /// thread cannot start; an unusable cache directory is logged and ignored.
    pub fn new(config: EngineConfig) -> Result<Self, LoadError> {
        let engine_err = |e: &dyn std::fmt::Display| LoadError::Engine {
            message: e.to_string(),
        };
        let limits = &config.limits;
        let mut pool = PoolingAllocationConfig::new();
        pool.total_core_instances(config.max_instances)
            .total_memories(config.max_instances)
            .total_tables(config.max_instances)
            .max_memories_per_module(1)
            .max_tables_per_module(4)
            .max_memory_size(limits.max_memory)
            .table_elements(limits.max_table_elements)
            .linear_memory_keep_resident(config.memory_keep_resident)
            // One stack per instance for asynchronous invocations; they are reused, never
            // unmapped (and not zeroed: compiled wasm never reads a slot it did not write).
            .total_stacks(config.max_instances)
            .table_keep_resident(16 << 10)
            // Where the kernel supports it (Linux 6.7+), reset only the pages an instance
            // dirtied instead of the whole resident prefix.
            .pagemap_scan(wasmtime::Enabled::Auto);
        let mut wt = wasmtime::Config::new();
        wt.epoch_interruption(true)
            .consume_fuel(limits.fuel.is_some())
            .max_wasm_stack(config.max_wasm_stack)
            .cranelift_opt_level(wasmtime::OptLevel::Speed)
            // Only third-party unwinders need .eh_frame; registering it dominates loading a
            // compiled module, and wasm backtraces do not depend on it.
            .native_unwind_info(false)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let wasmtime = wasmtime::Engine::new(&wt).map_err(|e| engine_err(&e))?;

        let mut linker = Linker::new(&wasmtime);
        abi::add_to_linker(&mut linker, false).map_err(|e| engine_err(&e))?;
        let mut async_linker = Linker::new(&wasmtime);
        abi::add_to_linker(&mut async_linker, true).map_err(|e| engine_err(&e))?;

        let mut h = std::collections::hash_map::DefaultHasher::new();
        wasmtime.precompile_compatibility_hash().hash(&mut h);
        let fingerprint = format!("{:016x}", h.finish());

        let cache = config.cache_dir.as_deref().and_then(|dir| {
            cache::ModuleCache::open(dir)
                .inspect_err(|e| {
                    tracing::warn!("compiled-module cache disabled: {e}");
                })
                .ok()
        });
        let tick = config.epoch_tick.max(Duration::from_micros(100));
        let deadline_ticks = deadline_ticks(limits.deadline, tick);
        let yield_ticks = config
            .yield_interval
            .as_nanos()
            .div_ceil(tick.as_nanos())
            .clamp(1, u128::from(deadline_ticks));
        let yield_ticks = u64::try_from(yield_ticks).unwrap_or(deadline_ticks);
        let clock = Arc::new(Clock {
            ticks: AtomicU64::new(0),
            tick,
        });
        let ticker =
            EpochTicker::start(wasmtime.clone(), clock.clone()).map_err(|e| engine_err(&e))?;
        Ok(Engine {
            inner: Arc::new(Inner {
                wasmtime,
                linker,
                async_linker,
                wasi_linker: std::sync::OnceLock::new(),
                config,
                cache,
                fingerprint,
                deadline_ticks,
                yield_ticks,
                clock,
                _ticker: ticker,
            }),
        })
    }

    /// The configuration the engine was built with.
    pub fn config(&self) -> &EngineConfig {
        &self.inner.config
    }

    /// The compiled-module cache directory in use, if any.
    pub fn cache_dir(&self) -> Option<&Path> {
        self.inner.cache.as_ref().map(cache::ModuleCache::dir)
    }

    /// Compiles (or loads from the cache) a verified module, pre-initializes it when
    /// possible, checks its imports and exports against the waPC ABI, and pre-links it.
    pub fn prepare(&self, module: &VerifiedModule) -> Result<ActorTemplate, LoadError> {
        let inner = &*self.inner;
        let snapshot_enabled = inner.config.snapshot;
        let key = format!(
            "{}-{}-{}",
            module.claims().module_hash(),
            inner.fingerprint,
            if snapshot_enabled { "s" } else { "p" }
        );

        let cached = inner
            .cache
            .as_ref()
            .and_then(|c| c.get(&key))
            .and_then(|(flag, file, _)| self.deserialize(flag, file));
        let (compiled, snapshot, from_cache) = match cached {
            Some((m, snap)) => (m, snap, true),
            None => {
                let (m, snap) = self.compile(module.bytes(), snapshot_enabled)?;
                if let Some(cache) = &inner.cache {
                    match m.serialize() {
                        Ok(bytes) => {
                            if let Err(e) = cache.put(&key, u8::from(snap), &bytes) {
                                tracing::warn!("cannot write the compiled-module cache: {e}");
                            }
                        }
                        Err(e) => tracing::warn!("cannot serialize a compiled module: {e}"),
                    }
                }
                (m, snap, false)
            }
        };
        self.link(compiled, snapshot, from_cache)
    }

    fn deserialize(&self, flag: u8, file: std::fs::File) -> Option<(Module, bool)> {
        // SAFETY: `file` is an entry of our cache: a private directory (0700, our uid) whose
        // entries carry a keyed MAC under a key only this user can read, checked by
        // `ModuleCache::get` on this same open file; it holds what `Module::serialize`
        // produced for the same verified module hash and engine fingerprint, followed by
        // the cache's trailer. Entries are replaced by rename, never modified in place, so
        // the mapping wasmtime makes sees the authenticated bytes. wasmtime also refuses
        // artifacts of another engine configuration.
        #[allow(unsafe_code)]
        let module = unsafe { Module::deserialize_open_file(&self.inner.wasmtime, file) };
        match module {
            Ok(m) => Some((m, flag == 1)),
            Err(e) => {
                tracing::debug!("cached module not usable ({e}); recompiling");
                None
            }
        }
    }

    fn compile(&self, wasm: &[u8], try_snapshot: bool) -> Result<(Module, bool), LoadError> {
        let inner = &*self.inner;
        let compile = |bytes: &[u8]| {
            Module::new(&inner.wasmtime, bytes).map_err(|e| LoadError::Compile {
                message: format!("{e:#}"),
            })
        };
        let facts = snapshot::Facts::scan(wasm);
        let limit = inner.config.limits.max_memory;
        if let Some(initial) = facts.initial_memory
            && initial > limit as u64
        {
            return Err(LoadError::MemoryTooLarge {
                requested: initial,
                limit,
            });
        }
        // Compile a copy that exports the shadow-stack pointer, to report overflows clearly.
        let exposed = stack::expose(wasm);
        let wasm = exposed.as_deref().unwrap_or(wasm);
        let module = compile(wasm)?;
        // Check the ABI before spending anything more on the module.
        check_imports(&module)?;
        if try_snapshot && facts.snapshot_eligible() {
            match snapshot::preinitialize(
                &inner.wasmtime,
                wasm,
                &inner.config.limits,
                inner.deadline_ticks,
                inner.clock.clone(),
            ) {
                Ok(snap) => return Ok((compile(&snap)?, true)),
                Err(e) => tracing::debug!("not pre-initialized, init runs per instance: {e}"),
            }
        }
        Ok((module, false))
    }

    fn link(
        &self,
        module: Module,
        snapshot: bool,
        from_cache: bool,
    ) -> Result<ActorTemplate, LoadError> {
        check_imports(&module)?;
        self.check_resources(&module)?;
        let guest_call = export_func(&module, "__guest_call", &[I32, I32], &[I32]).ok_or(
            LoadError::MissingExport {
                what: "`__guest_call: (i32, i32) -> i32`".into(),
                hint: "waPC actors export it; build with the sigil-actor or wapc-guest crate",
            },
        )?;
        self.link_checked(module, guest_call, snapshot, from_cache)
    }

    /// The memory, tables and memories a module asks for, against the limits.
    fn check_resources(&self, module: &Module) -> Result<(), LoadError> {
        let limits = &self.inner.config.limits;
        let res = module.resources_required();
        if let Some(initial) = res.max_initial_memory_size
            && initial > limits.max_memory as u64
        {
            return Err(LoadError::MemoryTooLarge {
                requested: initial,
                limit: limits.max_memory,
            });
        }
        if res.num_memories > 1 {
            return Err(LoadError::Resources {
                message: format!("{} memories; an actor has one", res.num_memories),
            });
        }
        if let Some(elements) = res.max_initial_table_size
            && elements > limits.max_table_elements as u64
        {
            return Err(LoadError::Resources {
                message: format!(
                    "a table of {elements} elements, above the {} limit",
                    limits.max_table_elements
                ),
            });
        }
        Ok(())
    }

    fn link_checked(
        &self,
        module: Module,
        guest_call: ModuleExport,
        snapshot: bool,
        from_cache: bool,
    ) -> Result<ActorTemplate, LoadError> {
        let memory = match module.get_export("memory") {
            Some(ExternType::Memory(_)) => module.get_export_index("memory"),
            _ => None,
        }
        .ok_or(LoadError::MissingExport {
            what: "a memory named `memory`".into(),
            hint: "waPC exchanges payloads through the exported memory",
        })?;
        let stack_pointer = match module.get_export(stack::EXPORT) {
            Some(ExternType::Global(_)) => module.get_export_index(stack::EXPORT),
            _ => None,
        };
        let mut init = Vec::new();
        if !snapshot {
            for name in INIT_EXPORTS {
                if let Some(idx) = export_func(&module, name, &[], &[]) {
                    init.push((name, idx));
                }
            }
        }
        let link = |linker: &Linker<InvocationState>| {
            linker
                .instantiate_pre(&module)
                .map_err(|e| LoadError::Engine {
                    message: format!("{e:#}"),
                })
        };
        let pre = link(&self.inner.linker)?;
        let pre_async = link(&self.inner.async_linker)?;
        Ok(ActorTemplate {
            pre,
            pre_async,
            guest_call,
            memory,
            stack_pointer,
            init,
            info: TemplateInfo {
                from_cache,
                snapshot,
            },
        })
    }

    /// A store for one instance. A synchronous store traps at the deadline; an
    /// asynchronous one yields to the executor every `yield_ticks` and traps at the deadline.
    fn store(
        &self,
        handler: Arc<dyn HostCallHandler>,
        asynchronous: bool,
    ) -> Result<Store<InvocationState>, InvocationError> {
        let inner = &*self.inner;
        let limits = &inner.config.limits;
        let deadline_tick = inner.clock.tick_after(inner.deadline_ticks);
        let state = InvocationState::new(handler, limits, inner.clock.clone(), deadline_tick);
        let mut store = Store::new(&inner.wasmtime, state);
        store.limiter(|s| &mut s.limiter);
        if asynchronous {
            let clock = inner.clock.clone();
            let slice = inner.yield_ticks;
            store.set_epoch_deadline(slice);
            store.epoch_deadline_callback(move |ctx| {
                let remaining = ctx.data().deadline_tick.saturating_sub(clock.now());
                Ok(if remaining == 0 {
                    UpdateDeadline::Interrupt
                } else {
                    // tokio's yield lets the worker's other tasks run before this one again.
                    UpdateDeadline::YieldCustom(
                        slice.min(remaining),
                        Box::pin(tokio::task::yield_now()),
                    )
                })
            });
        } else {
            store.set_epoch_deadline(inner.deadline_ticks);
            store.epoch_deadline_trap();
        }
        if let Some(fuel) = limits.fuel {
            store
                .set_fuel(fuel)
                .map_err(|e| InvocationError::Instantiate {
                    message: e.to_string(),
                })?;
        }
        Ok(store)
    }

    /// Instantiates the template with its own store and runs its init exports (unless the
    /// template is pre-initialized). The deadline starts now and covers everything.
    fn instantiate_store(
        &self,
        template: &ActorTemplate,
        handler: Arc<dyn HostCallHandler>,
    ) -> Result<(Store<InvocationState>, GuestCall), InvocationError> {
        let limits = &self.inner.config.limits;
        let mut store = self.store(handler, false)?;
        let instance = template
            .pre
            .instantiate(&mut store)
            .map_err(|e| classify(e, store.data(), limits, Phase::Start, None))?;
        for (name, f) in template.bind(&mut store, &instance) {
            if let Err(e) = f.call(&mut store, ()) {
                let sp = stack_pointer_value(&mut store);
                return Err(classify(e, store.data(), limits, Phase::Init(name), sp));
            }
        }
        let guest_call = template.guest_call(&mut store, &instance)?;
        Ok((store, guest_call))
    }

    /// [`Engine::instantiate_store`] for an asynchronous invocation.
    async fn instantiate_store_async(
        &self,
        template: &ActorTemplate,
        handler: Arc<dyn HostCallHandler>,
    ) -> Result<(Store<InvocationState>, GuestCall), InvocationError> {
        let limits = &self.inner.config.limits;
        let mut store = self.store(handler, true)?;
        let instance = match template.pre_async.instantiate_async(&mut store).await {
            Ok(instance) => instance,
            Err(e) => return Err(classify(e, store.data(), limits, Phase::Start, None)),
        };
        for (name, f) in template.bind(&mut store, &instance) {
            if let Err(e) = f.call_async(&mut store, ()).await {
                let sp = stack_pointer_value(&mut store);
                return Err(classify(e, store.data(), limits, Phase::Init(name), sp));
            }
        }
        let guest_call = template.guest_call(&mut store, &instance)?;
        Ok((store, guest_call))
    }

    /// Runs one invocation in a fresh instance, which is dropped afterwards.
    pub fn invoke(
        &self,
        template: &ActorTemplate,
        handler: Arc<dyn HostCallHandler>,
        operation: &str,
        payload: &[u8],
    ) -> Result<Vec<u8>, InvocationError> {
        self.check_request(payload)?;
        let (mut store, guest_call) = self.instantiate_store(template, handler)?;
        let deadline = store.data().deadline_tick;
        call_guest(
            &mut store,
            &guest_call,
            operation,
            payload,
            deadline,
            &self.inner.config.limits,
        )
    }

    /// Runs one invocation in a fresh instance, as a future for an async executor (see the
    /// module documentation); `handler` serves its host calls with
    /// [`HostCallHandler::host_call_async`]. Dropping the future abandons the invocation.
    pub async fn invoke_async(
        &self,
        template: &ActorTemplate,
        handler: Arc<dyn HostCallHandler>,
        operation: &str,
        payload: &[u8],
    ) -> Result<Vec<u8>, InvocationError> {
        self.check_request(payload)?;
        let limits = &self.inner.config.limits;
        let (mut store, guest_call) = self.instantiate_store_async(template, handler).await?;
        let deadline = store.data().deadline_tick;
        let args = begin_call(&mut store, operation, payload, deadline, limits)?;
        let result = guest_call.call_async(&mut store, args).await;
        end_call(&mut store, result, limits)
    }

    /// Creates an instance that serves several calls in turn. State persists between its
    /// calls, and a trap retires it; the host uses fresh instances by default.
    pub fn instantiate(
        &self,
        template: &ActorTemplate,
        handler: Arc<dyn HostCallHandler>,
    ) -> Result<LiveInstance, InvocationError> {
        let (store, guest_call) = self.instantiate_store(template, handler)?;
        Ok(LiveInstance {
            engine: self.clone(),
            store,
            guest_call,
            retired: false,
        })
    }

    fn check_request(&self, payload: &[u8]) -> Result<(), InvocationError> {
        let limit = self.inner.config.limits.max_request;
        if payload.len() > limit {
            return Err(InvocationError::RequestTooLarge {
                size: payload.len(),
                limit,
            });
        }
        Ok(())
    }
}

/// An instance kept alive across calls (see [`Engine::instantiate`]).
pub struct LiveInstance {
    engine: Engine,
    store: Store<InvocationState>,
    guest_call: GuestCall,
    retired: bool,
}

impl std::fmt::Debug for LiveInstance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveInstance")
            .field("retired", &self.retired)
            .finish_non_exhaustive()
    }
}

impl LiveInstance {
    /// Runs one call, with a fresh deadline and fuel allowance.
    pub fn call(&mut self, operation: &str, payload: &[u8]) -> Result<Vec<u8>, InvocationError> {
        if self.retired {
            return Err(InvocationError::Instantiate {
                message: "this instance trapped earlier and was retired".into(),
            });
        }
        self.engine.check_request(payload)?;
        let inner = &*self.engine.inner;
        let limits = &inner.config.limits;
        self.store.set_epoch_deadline(inner.deadline_ticks);
        if let Some(fuel) = limits.fuel {
            let _ = self.store.set_fuel(fuel);
        }
        let deadline = inner.clock.tick_after(inner.deadline_ticks);
        let result = call_guest(
            &mut self.store,
            &self.guest_call,
            operation,
            payload,
            deadline,
            limits,
        );
        if matches!(
            result,
            Err(ref e) if !matches!(e, InvocationError::Guest { .. })
        ) {
            self.retired = true;
        }
        result
    }
}

fn call_guest(
    store: &mut Store<InvocationState>,
    guest_call: &GuestCall,
    operation: &str,
    payload: &[u8],
    deadline_tick: u64,
    limits: &Limits,
) -> Result<Vec<u8>, InvocationError> {
    let args = begin_call(store, operation, payload, deadline_tick, limits)?;
    let result = guest_call.call(&mut *store, args);
    end_call(store, result, limits)
}

/// Hands the request to the instance; returns the arguments of `__guest_call`.
fn begin_call(
    store: &mut Store<InvocationState>,
    operation: &str,
    payload: &[u8],
    deadline_tick: u64,
    limits: &Limits,
) -> Result<(i32, i32), InvocationError> {
    let op_len = i32::try_from(operation.len()).map_err(|_| InvocationError::Protocol {
        message: "operation name too long".into(),
    })?;
    let payload_len =
        i32::try_from(payload.len()).map_err(|_| InvocationError::RequestTooLarge {
            size: payload.len(),
            limit: limits.max_request,
        })?;
    store.data_mut().begin(operation, payload, deadline_tick);
    Ok((op_len, payload_len))
}

/// Turns what `__guest_call` returned into the invocation's result.
fn end_call(
    store: &mut Store<InvocationState>,
    result: wasmtime::Result<i32>,
    limits: &Limits,
) -> Result<Vec<u8>, InvocationError> {
    let sp = if result.is_err() {
        stack_pointer_value(store)
    } else {
        None
    };
    let state = store.data_mut();
    state.in_call = false;
    match result {
        Ok(1) => Ok(state.response.take().unwrap_or_default()),
        Ok(0) => Err(InvocationError::Guest {
            message: state
                .guest_error
                .take()
                .unwrap_or_else(|| "the actor reported failure without a message".into()),
        }),
        Ok(other) => Err(InvocationError::Protocol {
            message: format!("`__guest_call` returned {other}; waPC allows 0 or 1"),
        }),
        Err(e) => Err(classify(e, state, limits, Phase::Call, sp)),
    }
}

fn stack_pointer_value(store: &mut Store<InvocationState>) -> Option<i32> {
    let global = store.data().stack_pointer?;
    global.get(&mut *store).i32()
}

/// The trap and the innermost frames of its backtrace, without the hundreds of identical
/// frames a runaway recursion leaves.
fn describe_trap(err: &wasmtime::Error, trap: Trap) -> String {
    const FRAMES: usize = 4;
    let mut out = trap.to_string();
    if let Some(bt) = err.downcast_ref::<wasmtime::WasmBacktrace>() {
        for f in bt.frames().iter().take(FRAMES) {
            let name = f.func_name().map_or_else(
                || format!("function {}", f.func_index()),
                ToString::to_string,
            );
            let at = f
                .module_offset()
                .map_or(String::new(), |o| format!(" @ {o:#x}"));
            out.push_str(&format!("\n    at {name}{at}"));
        }
        if bt.frames().len() > FRAMES {
            out.push_str(&format!(
                "\n    ... {} more frames",
                bt.frames().len() - FRAMES
            ));
        }
    }
    out
}

/// Turns a wasmtime error into the invocation error that says what really happened.
fn classify(
    err: wasmtime::Error,
    state: &InvocationState,
    limits: &Limits,
    phase: Phase,
    stack_pointer: Option<i32>,
) -> InvocationError {
    if let Some(fault) = err.downcast_ref::<AbiFault>() {
        return match fault {
            AbiFault::BadPointer {
                function,
                ptr,
                len,
                memory_size,
            } => InvocationError::BadGuestPointer {
                function,
                ptr: *ptr,
                len: *len,
                memory_size: *memory_size,
            },
            AbiFault::ResponseTooLarge { size, limit } => InvocationError::ResponseTooLarge {
                size: *size,
                limit: *limit,
            },
            AbiFault::Protocol(message) => InvocationError::Protocol {
                message: message.clone(),
            },
        };
    }
    if let Some(requested) = state.limiter.denied_memory {
        return InvocationError::MemoryLimitExceeded {
            requested,
            limit: limits.max_memory,
        };
    }
    match err.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => InvocationError::DeadlineExceeded {
            limit: limits.deadline,
        },
        Some(Trap::OutOfFuel) => InvocationError::FuelExhausted {
            limit: limits.fuel.unwrap_or_default(),
        },
        Some(Trap::StackOverflow) => InvocationError::StackOverflow,
        Some(Trap::MemoryOutOfBounds) if stack_pointer.is_some_and(stack::overflowed) => {
            InvocationError::StackOverflow
        }
        Some(_) if state.guest_error.is_some() => InvocationError::Panicked {
            message: state.guest_error.clone().unwrap_or_default(),
        },
        Some(trap) => InvocationError::Trap {
            phase,
            message: describe_trap(&err, *trap),
        },
        None if phase == Phase::Start => InvocationError::Instantiate {
            message: format!("{err:#}"),
        },
        None => InvocationError::Trap {
            phase,
            message: format!("{err:#}"),
        },
    }
}

const I32: wasmtime::ValType = wasmtime::ValType::I32;

fn export_func(
    module: &Module,
    name: &str,
    params: &[wasmtime::ValType],
    results: &[wasmtime::ValType],
) -> Option<ModuleExport> {
    let Some(ExternType::Func(ty)) = module.get_export(name) else {
        return None;
    };
    let same = |a: &mut dyn ExactSizeIterator<Item = wasmtime::ValType>,
                b: &[wasmtime::ValType]| {
        a.len() == b.len() && a.zip(b).all(|(x, y)| wasmtime::ValType::eq(&x, y))
    };
    if same(&mut ty.params(), params) && same(&mut ty.results(), results) {
        module.get_export_index(name)
    } else {
        None
    }
}

fn signature(ty: &wasmtime::FuncType) -> String {
    let params: Vec<String> = ty.params().map(|p| p.to_string()).collect();
    let results: Vec<String> = ty.results().map(|r| r.to_string()).collect();
    let results = match results.len() {
        0 => "()".to_string(),
        1 => results.join(""),
        _ => format!("({})", results.join(", ")),
    };
    format!("({}) -> {results}", params.join(", "))
}

/// Every import must be a waPC function of the right type; anything else is a clear error
/// rather than a link failure deep inside wasmtime.
fn check_imports(module: &Module) -> Result<(), LoadError> {
    for import in module.imports() {
        let kind = match import.ty() {
            ExternType::Func(_) => "function",
            ExternType::Global(_) => "global",
            ExternType::Table(_) => "table",
            ExternType::Memory(_) => "memory",
            _ => "item",
        };
        let known = abi::IMPORTS
            .iter()
            .find(|(name, _)| import.module() == "wapc" && *name == import.name());
        match (known, import.ty()) {
            (Some((name, expected)), ExternType::Func(ty)) => {
                let found = signature(&ty);
                if found != *expected {
                    return Err(LoadError::ImportSignature {
                        name: (*name).to_string(),
                        found,
                        expected: (*expected).to_string(),
                    });
                }
            }
            _ => {
                return Err(LoadError::UnsupportedImport {
                    module: import.module().to_string(),
                    name: import.name().to_string(),
                    kind: kind.to_string(),
                });
            }
        }
    }
    Ok(())
}

fn deadline_ticks(deadline: Duration, tick: Duration) -> u64 {
    let ticks = deadline.as_nanos().div_ceil(tick.as_nanos().max(1));
    u64::try_from(ticks)
        .unwrap_or(u64::MAX / 2)
        .saturating_add(1)
}
