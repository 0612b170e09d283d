//! Pre-initialization: run an actor's `wapc_init` once and snapshot the result (wizer), so
//! no invocation pays for it again.
//!
//! The snapshot is a derived artifact of a verified module. It is only ever cached under the
//! signed module's hash, never trusted on its own. `wapc_init` runs here under the same
//! deadline, fuel and memory limits as any invocation, with every import trapping: an init
//! function that calls the host cannot be snapshotted (its effect would be lost), so such
//! modules fall back to running init per instance.

use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use wasmtime::{Instance, Linker, Module, Store};
use wasmtime_wizer::{InstanceState, SnapshotVal, ValType, Wizer};

use super::abi::InvocationState;
use super::{Clock, Limits, NoHostCalls};

/// The init export snapshotted.
pub(crate) const INIT: &str = "wapc_init";

/// What a quick scan of a module's sections tells before compiling it.
#[derive(Debug, Default)]
pub(crate) struct Facts {
    start_section: bool,
    exports_start: bool,
    exports_init: bool,
    /// Bytes of the first memory's minimum size.
    pub(crate) initial_memory: Option<u64>,
}

impl Facts {
    /// Reads the sections that matter; a module that does not parse yields no facts (the
    /// compiler will report what is wrong).
    pub(crate) fn scan(wasm: &[u8]) -> Facts {
        let mut facts = Facts::default();
        for payload in wasmparser::Parser::new(0).parse_all(wasm) {
            match payload {
                Ok(wasmparser::Payload::StartSection { .. }) => facts.start_section = true,
                Ok(wasmparser::Payload::MemorySection(memories)) => {
                    if let Some(Ok(m)) = memories.into_iter().next() {
                        let page = 1u64 << m.page_size_log2.unwrap_or(16);
                        facts.initial_memory = Some(m.initial.saturating_mul(page));
                    }
                }
                Ok(wasmparser::Payload::ExportSection(exports)) => {
                    for export in exports.into_iter().flatten() {
                        let func = export.kind == wasmparser::ExternalKind::Func;
                        match export.name {
                            "_start" => facts.exports_start = true,
                            INIT => facts.exports_init = func,
                            _ => {}
                        }
                    }
                }
                Ok(_) => {}
                Err(_) => return Facts::default(),
            }
        }
        facts
    }

    /// A snapshot candidate exports `wapc_init`, and has neither a start section nor a
    /// `_start` export (both run code whose effects a snapshot would not see).
    pub(crate) fn snapshot_eligible(&self) -> bool {
        self.exports_init && !self.start_section && !self.exports_start
    }
}

/// Runs `wapc_init` and returns the pre-initialized module.
pub(crate) fn preinitialize(
    engine: &wasmtime::Engine,
    wasm: &[u8],
    limits: &Limits,
    epoch_ticks: u64,
    clock: Arc<Clock>,
) -> Result<Vec<u8>, String> {
    let mut wizer = Wizer::new();
    wizer.init_func(INIT);
    let (cx, instrumented) = wizer.instrument(wasm).map_err(|e| format!("{e:#}"))?;
    let module = Module::new(engine, &instrumented).map_err(|e| format!("{e:#}"))?;

    let deadline_tick = clock.tick_after(epoch_ticks);
    let state = InvocationState::new(Arc::new(NoHostCalls), limits, clock, deadline_tick);
    let mut store = Store::new(engine, state);
    store.limiter(|s| &mut s.limiter);
    store.set_epoch_deadline(epoch_ticks);
    store.epoch_deadline_trap();
    if let Some(fuel) = limits.fuel {
        store.set_fuel(fuel).map_err(|e| format!("{e:#}"))?;
    }
    let mut linker: Linker<InvocationState> = Linker::new(engine);
    linker
        .define_unknown_imports_as_traps(&module)
        .map_err(|e| format!("{e:#}"))?;
    let instance = linker
        .instantiate(&mut store, &module)
        .map_err(|e| format!("{e:#}"))?;
    instance
        .get_typed_func::<(), ()>(&mut store, INIT)
        .and_then(|f| f.call(&mut store, ()))
        .map_err(|e| format!("`{INIT}` failed during pre-initialization: {e:#}"))?;

    let mut state = Snapshotting {
        store: &mut store,
        instance,
        missing: None,
    };
    // The state is read synchronously; the future completes on its first poll.
    let snapshot = ready(wizer.snapshot(&cx, &mut state))
        .ok_or("the snapshot did not complete synchronously")?
        .map_err(|e| format!("{e:#}"))?;
    match state.missing {
        Some(name) => Err(format!("the instrumented module lacks the export `{name}`")),
        None => Ok(snapshot),
    }
}

fn ready<F: Future>(f: F) -> Option<F::Output> {
    let mut f = std::pin::pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => Some(v),
        Poll::Pending => None,
    }
}

struct Snapshotting<'a> {
    store: &'a mut Store<InvocationState>,
    instance: Instance,
    /// An export wizer asked for that is not there (or of a type it cannot hold).
    missing: Option<String>,
}

impl InstanceState for Snapshotting<'_> {
    async fn global_get(&mut self, name: &str, _type_hint: ValType) -> SnapshotVal {
        use wasmtime::Val;
        let value = self
            .instance
            .get_global(&mut *self.store, name)
            .map(|g| g.get(&mut *self.store));
        match value {
            Some(Val::I32(x)) => SnapshotVal::I32(x),
            Some(Val::I64(x)) => SnapshotVal::I64(x),
            Some(Val::F32(x)) => SnapshotVal::F32(x),
            Some(Val::F64(x)) => SnapshotVal::F64(x),
            Some(Val::V128(x)) => SnapshotVal::V128(x.as_u128()),
            _ => {
                self.missing = Some(name.to_string());
                SnapshotVal::I32(0)
            }
        }
    }

    async fn memory_contents(&mut self, name: &str, contents: impl FnOnce(&[u8]) + Send) {
        match self.instance.get_memory(&mut *self.store, name) {
            Some(memory) => contents(memory.data(&*self.store)),
            None => {
                self.missing = Some(name.to_string());
                contents(&[])
            }
        }
    }
}
