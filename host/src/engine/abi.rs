//! The waPC ABI, host side: the functions an actor imports from module `wapc`, and the
//! per-invocation state they work on.
//!
//! Every pointer and length a guest passes is checked against its memory; a bad one ends the
//! invocation with [`AbiFault::BadPointer`], never touching host memory. Payloads are copied
//! once, straight between guest memory and the host buffer that owns them.

use std::sync::Arc;

use wasmtime::{Caller, Linker, Memory, ResourceLimiter};

use super::error::AbiFault;
use super::{Clock, HostCall, HostCallHandler, Limits};

/// Longest binding, namespace or operation name a guest may pass to `__host_call`.
const MAX_NAME_LEN: usize = 1024;
/// Longest error message kept from `__guest_error`.
const MAX_GUEST_ERROR: usize = 64 * 1024;

/// Denies memory and table growth beyond the limits, remembering a denied memory request so
/// the trap that usually follows can be reported as what it is.
pub(crate) struct Limiter {
    max_memory: usize,
    max_table_elements: usize,
    pub(crate) denied_memory: Option<usize>,
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max_memory {
            self.denied_memory = Some(desired);
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= self.max_table_elements)
    }

    fn instances(&self) -> usize {
        1
    }

    fn tables(&self) -> usize {
        4
    }

    fn memories(&self) -> usize {
        1
    }
}

/// Everything one store (one actor instance) needs while it runs.
pub(crate) struct InvocationState {
    pub(crate) handler: Arc<dyn HostCallHandler>,
    pub(crate) limiter: Limiter,
    pub(crate) memory: Option<Memory>,
    /// The actor's exported shadow-stack pointer, when it has one (see `stack`).
    pub(crate) stack_pointer: Option<wasmtime::Global>,
    pub(crate) max_response: usize,
    pub(crate) max_request: usize,
    pub(crate) max_log_bytes: usize,
    /// The operation and payload of the call in progress (buffers reused across calls).
    pub(crate) request: (String, Vec<u8>),
    /// True while `__guest_call` runs: the request functions are valid only then.
    pub(crate) in_call: bool,
    pub(crate) response: Option<Vec<u8>>,
    pub(crate) guest_error: Option<String>,
    pub(crate) host_response: Vec<u8>,
    pub(crate) host_error: Vec<u8>,
    pub(crate) log_budget: usize,
    /// The invocation's deadline, in epoch ticks of `clock`.
    pub(crate) deadline_tick: u64,
    pub(crate) clock: Arc<Clock>,
    /// The WASI context, for a run of a WASI command module.
    pub(crate) wasi: Option<wasmtime_wasi::p1::WasiP1Ctx>,
    /// The `wasi_experimental_http` state of a WASI run.
    pub(crate) http: Option<Box<super::wasi_http::HttpSession>>,
}

impl InvocationState {
    pub(crate) fn new(
        handler: Arc<dyn HostCallHandler>,
        limits: &Limits,
        clock: Arc<Clock>,
        deadline_tick: u64,
    ) -> Self {
        InvocationState {
            handler,
            limiter: Limiter {
                max_memory: limits.max_memory,
                max_table_elements: limits.max_table_elements,
                denied_memory: None,
            },
            memory: None,
            stack_pointer: None,
            max_response: limits.max_response,
            max_request: limits.max_request,
            max_log_bytes: limits.max_log_bytes,
            request: (String::new(), Vec::new()),
            in_call: false,
            response: None,
            guest_error: None,
            host_response: Vec::new(),
            host_error: Vec::new(),
            log_budget: limits.max_log_bytes,
            deadline_tick,
            clock,
            wasi: None,
            http: None,
        }
    }

    /// Resets per-call state before a call to `__guest_call`.
    pub(crate) fn begin(&mut self, operation: &str, payload: &[u8], deadline_tick: u64) {
        let (op, buf) = &mut self.request;
        self.in_call = true;
        op.clear();
        op.push_str(operation);
        buf.clear();
        buf.extend_from_slice(payload);
        self.response = None;
        self.guest_error = None;
        self.host_response.clear();
        self.host_error.clear();
        self.limiter.denied_memory = None;
        self.log_budget = self.max_log_bytes;
        self.deadline_tick = deadline_tick;
    }
}

type Ctx<'a> = Caller<'a, InvocationState>;

fn memory_of(caller: &mut Ctx<'_>) -> wasmtime::Result<Memory> {
    if let Some(m) = caller.data().memory {
        return Ok(m);
    }
    // During instantiation (a start function) the memory is not recorded yet.
    match caller.get_export("memory") {
        Some(wasmtime::Extern::Memory(m)) => {
            caller.data_mut().memory = Some(m);
            Ok(m)
        }
        _ => Err(wasmtime::Error::new(AbiFault::Protocol(
            "the actor exports no memory named `memory`".into(),
        ))),
    }
}

fn range(
    data_len: usize,
    function: &'static str,
    ptr: i32,
    len: i32,
) -> wasmtime::Result<std::ops::Range<usize>> {
    let (p, l) = (ptr as u32, len as u32);
    let start = p as usize;
    match start.checked_add(l as usize) {
        Some(end) if end <= data_len => Ok(start..end),
        _ => Err(wasmtime::Error::new(AbiFault::BadPointer {
            function,
            ptr: p,
            len: l,
            memory_size: data_len,
        })),
    }
}

fn write_guest(
    data: &mut [u8],
    function: &'static str,
    ptr: i32,
    bytes: &[u8],
) -> wasmtime::Result<()> {
    let len = i32::try_from(bytes.len()).unwrap_or(i32::MAX);
    let r = range(data.len(), function, ptr, len)?;
    data[r].copy_from_slice(bytes);
    Ok(())
}

fn outside_call(function: &str) -> wasmtime::Error {
    wasmtime::Error::new(AbiFault::Protocol(format!(
        "`{function}` was called outside of `__guest_call`"
    )))
}

fn len_i32(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// The arguments of `__host_call`: binding, namespace, operation and payload, each as a
/// pointer and a length.
type HostCallArgs = (i32, i32, i32, i32, i32, i32, i32, i32);

/// The guest-memory ranges of one `__host_call`, checked against the memory's size.
struct HostCallRanges {
    binding: std::ops::Range<usize>,
    namespace: std::ops::Range<usize>,
    operation: std::ops::Range<usize>,
    payload: std::ops::Range<usize>,
}

impl HostCallRanges {
    /// Checks every pointer and length; a bad one is a fault that ends the invocation.
    fn check(data_len: usize, args: HostCallArgs) -> wasmtime::Result<Self> {
        let (bd_ptr, bd_len, ns_ptr, ns_len, op_ptr, op_len, ptr, len) = args;
        Ok(HostCallRanges {
            binding: range(data_len, "__host_call", bd_ptr, bd_len)?,
            namespace: range(data_len, "__host_call", ns_ptr, ns_len)?,
            operation: range(data_len, "__host_call", op_ptr, op_len)?,
            payload: range(data_len, "__host_call", ptr, len)?,
        })
    }

    /// The call these ranges describe; `Err` is a message for the actor (a name that is
    /// too long or not UTF-8, a payload over the limit).
    fn call<'a>(&self, data: &'a [u8], state: &InvocationState) -> Result<HostCall<'a>, String> {
        let text = |r: &std::ops::Range<usize>, what: &str| -> Result<&'a str, String> {
            if r.len() > MAX_NAME_LEN {
                return Err(format!(
                    "host call {what} is {} bytes, more than {MAX_NAME_LEN}",
                    r.len()
                ));
            }
            std::str::from_utf8(&data[r.clone()])
                .map_err(|_| format!("host call {what} is not UTF-8"))
        };
        let call = HostCall {
            binding: text(&self.binding, "binding")?,
            namespace: text(&self.namespace, "namespace")?,
            operation: text(&self.operation, "operation")?,
            payload: &data[self.payload.clone()],
            deadline: state.clock.instant_of(state.deadline_tick),
        };
        if call.payload.len() > state.max_request {
            return Err(format!(
                "host call payload of {} bytes exceeds the {}-byte limit",
                call.payload.len(),
                state.max_request
            ));
        }
        Ok(call)
    }
}

impl InvocationState {
    /// Keeps a host call's outcome for the guest to read, and returns what `__host_call`
    /// returns: 1 for a response, 0 for an error.
    fn finish_host_call(&mut self, outcome: Result<Vec<u8>, String>) -> i32 {
        self.host_error.clear();
        match outcome {
            Ok(response) => {
                self.host_response = response;
                1
            }
            Err(message) => {
                self.host_response.clear();
                self.host_error = message.into_bytes();
                0
            }
        }
    }
}

/// Adds the waPC host functions to a linker. With `asynchronous`, `__host_call` awaits the
/// handler's future (stores instantiated from that linker must be driven with the `*_async`
/// calls); without, it calls the handler synchronously.
pub(crate) fn add_to_linker(
    linker: &mut Linker<InvocationState>,
    asynchronous: bool,
) -> wasmtime::Result<()> {
    linker.func_wrap(
        "wapc",
        "__guest_request",
        |mut caller: Ctx<'_>, op_ptr: i32, ptr: i32| -> wasmtime::Result<()> {
            let memory = memory_of(&mut caller)?;
            let (data, state) = memory.data_and_store_mut(&mut caller);
            if !state.in_call {
                return Err(outside_call("__guest_request"));
            }
            let (op, payload) = &state.request;
            write_guest(data, "__guest_request", op_ptr, op.as_bytes())?;
            write_guest(data, "__guest_request", ptr, payload)
        },
    )?;

    linker.func_wrap(
        "wapc",
        "__guest_response",
        |mut caller: Ctx<'_>, ptr: i32, len: i32| -> wasmtime::Result<()> {
            let memory = memory_of(&mut caller)?;
            let (data, state) = memory.data_and_store_mut(&mut caller);
            let size = len as u32 as usize;
            if size > state.max_response {
                return Err(wasmtime::Error::new(AbiFault::ResponseTooLarge {
                    size,
                    limit: state.max_response,
                }));
            }
            let r = range(data.len(), "__guest_response", ptr, len)?;
            let response = state.response.get_or_insert_with(Vec::new);
            response.clear();
            response.extend_from_slice(&data[r]);
            Ok(())
        },
    )?;

    linker.func_wrap(
        "wapc",
        "__guest_error",
        |mut caller: Ctx<'_>, ptr: i32, len: i32| -> wasmtime::Result<()> {
            let memory = memory_of(&mut caller)?;
            let (data, state) = memory.data_and_store_mut(&mut caller);
            let r = range(data.len(), "__guest_error", ptr, len)?;
            let bytes = &data[r.start..r.end.min(r.start + MAX_GUEST_ERROR)];
            state.guest_error = Some(String::from_utf8_lossy(bytes).into_owned());
            Ok(())
        },
    )?;

    if asynchronous {
        linker.func_wrap_async(
            "wapc",
            "__host_call",
            |mut caller: Ctx<'_>, args: HostCallArgs| {
                Box::new(async move {
                    let memory = memory_of(&mut caller)?;
                    let (data, state) = memory.data_and_store_mut(&mut caller);
                    let ranges = HostCallRanges::check(data.len(), args)?;
                    let outcome = match ranges.call(data, state) {
                        Ok(call) => state.handler.host_call_async(call).await,
                        Err(message) => Err(message),
                    };
                    Ok(state.finish_host_call(outcome))
                })
            },
        )?;
    } else {
        linker.func_wrap(
            "wapc",
            "__host_call",
            |mut caller: Ctx<'_>,
             bd_ptr: i32,
             bd_len: i32,
             ns_ptr: i32,
             ns_len: i32,
             op_ptr: i32,
             op_len: i32,
             ptr: i32,
             len: i32|
             -> wasmtime::Result<i32> {
                let memory = memory_of(&mut caller)?;
                let (data, state) = memory.data_and_store_mut(&mut caller);
                let args = (bd_ptr, bd_len, ns_ptr, ns_len, op_ptr, op_len, ptr, len);
                let ranges = HostCallRanges::check(data.len(), args)?;
                let outcome = ranges
                    .call(data, state)
                    .and_then(|call| state.handler.host_call(&call));
                Ok(state.finish_host_call(outcome))
            },
        )?;
    }

    linker.func_wrap("wapc", "__host_response_len", |caller: Ctx<'_>| -> i32 {
        len_i32(caller.data().host_response.len())
    })?;

    linker.func_wrap(
        "wapc",
        "__host_response",
        |mut caller: Ctx<'_>, ptr: i32| -> wasmtime::Result<()> {
            let memory = memory_of(&mut caller)?;
            let (data, state) = memory.data_and_store_mut(&mut caller);
            write_guest(data, "__host_response", ptr, &state.host_response)
        },
    )?;

    linker.func_wrap("wapc", "__host_error_len", |caller: Ctx<'_>| -> i32 {
        len_i32(caller.data().host_error.len())
    })?;

    linker.func_wrap(
        "wapc",
        "__host_error",
        |mut caller: Ctx<'_>, ptr: i32| -> wasmtime::Result<()> {
            let memory = memory_of(&mut caller)?;
            let (data, state) = memory.data_and_store_mut(&mut caller);
            write_guest(data, "__host_error", ptr, &state.host_error)
        },
    )?;

    linker.func_wrap(
        "wapc",
        "__console_log",
        |mut caller: Ctx<'_>, ptr: i32, len: i32| -> wasmtime::Result<()> {
            let memory = memory_of(&mut caller)?;
            let (data, state) = memory.data_and_store_mut(&mut caller);
            let r = range(data.len(), "__console_log", ptr, len)?;
            if state.log_budget == 0 {
                return Ok(());
            }
            let take = r.len().min(state.log_budget);
            state.log_budget -= take;
            let text = String::from_utf8_lossy(&data[r.start..r.start + take]);
            state.handler.console_log(&text);
            if state.log_budget == 0 {
                state.handler.console_log(
                    "(log budget for this invocation used up; further output dropped)",
                );
            }
            Ok(())
        },
    )?;
    Ok(())
}

/// The waPC imports and their types, for clear link errors.
pub(crate) const IMPORTS: &[(&str, &str)] = &[
    ("__guest_request", "(i32, i32) -> ()"),
    ("__guest_response", "(i32, i32) -> ()"),
    ("__guest_error", "(i32, i32) -> ()"),
    (
        "__host_call",
        "(i32, i32, i32, i32, i32, i32, i32, i32) -> i32",
    ),
    ("__host_response_len", "() -> i32"),
    ("__host_response", "(i32) -> ()"),
    ("__host_error_len", "() -> i32"),
    ("__host_error", "(i32) -> ()"),
    ("__console_log", "(i32, i32) -> ()"),
];
