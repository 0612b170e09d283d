//! WASI preview 1 command modules: compiled and pre-linked on the same engine as waPC
//! actors, run as a fresh instance per run under the same deadline, fuel and memory limits.
//!
//! What a run can reach is what [`WasiRun`] gives it: one directory mounted at `/work`,
//! a program name and nothing else as arguments, no environment, empty stdin, stdout and
//! stderr captured up to a cap, clocks and random numbers. No socket is ever granted (the
//! preview 1 socket calls work only on preopened sockets, and there are none). The WASI
//! implementation is `wasmtime-wasi`'s; what is here is the sandbox's shape.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use wasmtime::{Caller, ExternType, InstancePre, Linker, Module};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::{FsPerms, I32Exit, WasiCtxBuilder};

use super::HostCallHandler;
use super::abi::InvocationState;
use super::{Engine, InvocationError, LoadError, Phase, TemplateInfo, classify};

/// The import modules a WASI step may use.
pub(super) const WASI_MODULES: [&str; 1] = ["wasi_snapshot_preview1"];

/// Whether `wasm` is a WASI command module (imports from `wasi_snapshot_preview1` and
/// exports `_start`) rather than a waPC actor (which exports `__guest_call`).
pub fn is_wasi_command(wasm: &[u8]) -> bool {
    let mut wasi_import = false;
    let mut start = false;
    let mut guest_call = false;
    for payload in wasmparser::Parser::new(0).parse_all(wasm) {
        match payload {
            Ok(wasmparser::Payload::ImportSection(reader)) => {
                for import in reader.into_imports().flatten() {
                    if WASI_MODULES.contains(&import.module) || import.module == "wasi_unstable" {
                        wasi_import = true;
                    }
                }
            }
            Ok(wasmparser::Payload::ExportSection(reader)) => {
                for export in reader.into_iter().flatten() {
                    start |= export.name == "_start";
                    guest_call |= export.name == "__guest_call";
                }
            }
            Ok(wasmparser::Payload::CodeSectionStart { .. }) => break,
            Err(_) => return false,
            _ => {}
        }
    }
    wasi_import && start && !guest_call
}

/// A compiled, pre-linked WASI command module.
pub struct WasiTemplate {
    pre: InstancePre<InvocationState>,
    info: TemplateInfo,
}

impl std::fmt::Debug for WasiTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WasiTemplate")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

impl WasiTemplate {
    /// How the template was produced.
    pub fn info(&self) -> TemplateInfo {
        self.info
    }
}

/// What one run of a WASI module gets.
#[derive(Debug, Clone)]
pub struct WasiRun {
    /// The host directory mounted at `/work`, read and write; nothing else of the file
    /// system is visible.
    pub work_dir: PathBuf,
    /// The program name (`argv[0]`), the only argument.
    pub program: String,
    /// The most of stdout, and of stderr, kept (the end is kept; the rest is counted).
    pub output_cap: usize,
    /// What it may reach over `wasi_experimental_http` (none: nothing).
    pub http: Option<super::HttpGrant>,
}

/// How a run ended.
#[derive(Debug, Clone)]
pub struct WasiExit {
    /// The exit code: 0 when `_start` returned or called `proc_exit(0)`.
    pub code: i32,
    /// The end of what it wrote to stdout.
    pub stdout: Captured,
    /// The end of what it wrote to stderr.
    pub stderr: Captured,
}

/// Output captured from a stream, bounded.
#[derive(Debug, Clone, Default)]
pub struct Captured {
    /// The last bytes written, at most the cap.
    pub tail: Vec<u8>,
    /// How many bytes were written in all.
    pub total: u64,
}

impl Captured {
    /// The captured text (lossy UTF-8), with a note of what was dropped before it.
    pub fn text(&self) -> String {
        let text = String::from_utf8_lossy(&self.tail);
        let dropped = self.total.saturating_sub(self.tail.len() as u64);
        if dropped > 0 {
            format!("[{dropped} earlier bytes dropped] {text}")
        } else {
            text.into_owned()
        }
    }
}

/// A stream that keeps the last `cap` bytes written to it. Written by hand: the pipes of
/// `wasmtime-wasi` either grow without bound or trap the guest when full, where a step
/// that prints too much should keep running and the host keep the end of its output.
#[derive(Clone)]
struct TailPipe {
    inner: Arc<Mutex<(VecDeque<u8>, u64)>>,
    cap: usize,
}

impl TailPipe {
    fn new(cap: usize) -> Self {
        TailPipe {
            inner: Arc::new(Mutex::new((VecDeque::new(), 0))),
            cap,
        }
    }

    fn write(&self, bytes: &[u8]) {
        let mut guard = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (buf, total) = &mut *guard;
        *total += bytes.len() as u64;
        let keep = bytes.len().min(self.cap);
        buf.extend(&bytes[bytes.len() - keep..]);
        let excess = buf.len().saturating_sub(self.cap);
        buf.drain(..excess);
    }

    fn captured(&self) -> Captured {
        let guard = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Captured {
            tail: guard.0.iter().copied().collect(),
            total: guard.1,
        }
    }
}

impl IsTerminal for TailPipe {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for TailPipe {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl tokio::io::AsyncWrite for TailPipe {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.write(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// The linker of WASI modules: `wasi_snapshot_preview1`, asynchronous (a run yields at
/// every epoch tick, like an asynchronous waPC invocation).
pub(super) fn linker(engine: &wasmtime::Engine) -> wasmtime::Result<Linker<InvocationState>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p1::add_to_linker_async(&mut linker, InvocationState::wasi)?;
    linker.allow_shadowing(true);
    linker.func_wrap_async(
        "wasi_snapshot_preview1",
        "poll_oneoff",
        |mut caller: Caller<'_, InvocationState>,
         (subs, events, count, out): (i32, i32, i32, i32)| {
            Box::new(async move { poll_oneoff(&mut caller, subs, events, count, out).await })
        },
    )?;
    linker.allow_shadowing(false);
    super::wasi_http::add_to_linker(&mut linker)?;
    Ok(linker)
}

/// WASI errno values this `poll_oneoff` answers with.
const EFAULT: i32 = 21;
const EINVAL: i32 = 28;
const ENOTSUP: i32 = 58;

/// `poll_oneoff` for WASI steps, written here rather than taken from `wasmtime-wasi`: a
/// run's context lets file calls run inline (`allow_blocking_current_thread`, three times
/// cheaper per step than a hop to the blocking pool per call), and with that setting
/// `wasmtime-wasi` turns a sleep into `std::thread::sleep` of the worker, which no deadline
/// interrupts. Here a sleep is an asynchronous wait, covered by the run's deadline. A step
/// can only poll its own files and pipes, which are always ready, so readiness needs no
/// waiting: a poll with any file subscription answers those at once.
async fn poll_oneoff(
    caller: &mut Caller<'_, InvocationState>,
    subs: i32,
    events: i32,
    count: i32,
    out: i32,
) -> wasmtime::Result<i32> {
    const SUB: usize = 48;
    const EVENT: usize = 32;
    let Some(memory) = caller
        .get_export("memory")
        .and_then(wasmtime::Extern::into_memory)
    else {
        return Ok(EFAULT);
    };
    let (Ok(subs), Ok(events), Ok(count), Ok(out)) = (
        usize::try_from(subs),
        usize::try_from(events),
        usize::try_from(count),
        usize::try_from(out),
    ) else {
        return Ok(EINVAL);
    };
    if count == 0 {
        return Ok(EINVAL);
    }
    let mut raw = vec![0u8; count.saturating_mul(SUB)];
    if memory.read(&*caller, subs, &mut raw).is_err() {
        return Ok(EFAULT);
    }
    let u64_at = |b: &[u8], at: usize| {
        let mut v = [0u8; 8];
        v.copy_from_slice(&b[at..at + 8]);
        u64::from_le_bytes(v)
    };
    // (userdata, event type, wait): clocks carry their wait, files none.
    let mut ready: Vec<(u64, u8)> = Vec::new();
    let mut clocks: Vec<(u64, std::time::Duration)> = Vec::new();
    for sub in raw.chunks_exact(SUB) {
        let userdata = u64_at(sub, 0);
        match sub[8] {
            0 => {
                let clock = u32::from_le_bytes([sub[16], sub[17], sub[18], sub[19]]);
                let timeout = u64_at(sub, 24);
                let absolute = u16::from_le_bytes([sub[40], sub[41]]) & 1 == 1;
                let wait = match (absolute, clock) {
                    (false, _) => std::time::Duration::from_nanos(timeout),
                    (true, 0) => {
                        let now = std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .unwrap_or_default();
                        std::time::Duration::from_nanos(timeout).saturating_sub(now)
                    }
                    // An absolute time on the monotonic clock, whose origin is the
                    // context's own.
                    (true, _) => return Ok(ENOTSUP),
                };
                clocks.push((userdata, wait));
            }
            tag @ (1 | 2) => ready.push((userdata, tag)),
            _ => return Ok(EINVAL),
        }
    }
    if ready.is_empty() {
        let wait = clocks.iter().map(|(_, w)| *w).min().unwrap_or_default();
        tokio::time::sleep(wait).await;
        ready.extend(
            clocks
                .iter()
                .filter(|(_, w)| *w <= wait)
                .map(|(userdata, _)| (*userdata, 0)),
        );
    }
    let ready: Vec<(u64, u8)> = ready.into_iter().take(count).collect();
    let mut written = vec![0u8; ready.len() * EVENT];
    for (slot, (userdata, kind)) in written.chunks_exact_mut(EVENT).zip(&ready) {
        slot[0..8].copy_from_slice(&userdata.to_le_bytes());
        slot[10] = *kind;
    }
    let n = u32::try_from(ready.len()).unwrap_or(u32::MAX);
    if memory.write(&mut *caller, events, &written).is_err()
        || memory.write(&mut *caller, out, &n.to_le_bytes()).is_err()
    {
        return Ok(EFAULT);
    }
    Ok(0)
}

impl InvocationState {
    /// The WASI context of a WASI run; an empty one (no files, no arguments) for a store
    /// that was given none, so a WASI call can never reach more than a run was given.
    fn wasi(&mut self) -> &mut WasiP1Ctx {
        self.wasi
            .get_or_insert_with(|| WasiCtxBuilder::new().build_p1())
    }
}

/// Every import must be a `wasi_snapshot_preview1` function: anything else is named.
fn check_wasi_imports(module: &Module) -> Result<(), LoadError> {
    for import in module.imports() {
        let http = import.module() == super::wasi_http::MODULE
            && super::wasi_http::FUNCTIONS.contains(&import.name());
        let ok = (WASI_MODULES.contains(&import.module()) || http)
            && matches!(import.ty(), ExternType::Func(_));
        if !ok {
            return Err(LoadError::UnsupportedWasiImport {
                module: import.module().to_string(),
                name: import.name().to_string(),
            });
        }
    }
    Ok(())
}

impl Engine {
    /// Compiles (or loads from the cache) a verified WASI command module and pre-links it
    /// against WASI preview 1.
    pub fn prepare_wasi(
        &self,
        module: &sigil_claims::VerifiedModule,
    ) -> Result<WasiTemplate, LoadError> {
        let inner = &*self.inner;
        let key = format!("{}-{}-w", module.claims().module_hash(), inner.fingerprint);
        let cached = inner
            .cache
            .as_ref()
            .and_then(|c| c.get(&key))
            .and_then(|(flag, file, _)| self.deserialize(flag, file));
        let (compiled, from_cache) = match cached {
            Some((m, _)) => (m, true),
            None => {
                // The memory a module asks for up front, against the limit, before the
                // pooling allocator refuses it with a message of its own.
                let limit = inner.config.limits.max_memory;
                if let Some(initial) = super::snapshot::Facts::scan(module.bytes()).initial_memory
                    && initial > limit as u64
                {
                    return Err(LoadError::MemoryTooLarge {
                        requested: initial,
                        limit,
                    });
                }
                let m = Module::new(&inner.wasmtime, module.bytes()).map_err(|e| {
                    LoadError::Compile {
                        message: format!("{e:#}"),
                    }
                })?;
                if let Some(cache) = &inner.cache
                    && let Ok(bytes) = m.serialize()
                    && let Err(e) = cache.put(&key, 0, &bytes)
                {
                    tracing::warn!("cannot write the compiled-module cache: {e}");
                }
                (m, false)
            }
        };
        check_wasi_imports(&compiled)?;
        self.check_resources(&compiled)?;
        if !matches!(compiled.get_export("_start"), Some(ExternType::Func(_))) {
            return Err(LoadError::MissingExport {
                what: "`_start`".into(),
                hint: "a WASI step is a command module (a `main`), built for wasm32-wasip1",
            });
        }
        let linker = inner
            .wasi_linker
            .get_or_init(|| linker(&inner.wasmtime).map_err(|e| format!("{e:#}")))
            .as_ref()
            .map_err(|e| LoadError::Engine { message: e.clone() })?;
        let pre = linker
            .instantiate_pre(&compiled)
            .map_err(|e| LoadError::Engine {
                message: format!("{e:#}"),
            })?;
        Ok(WasiTemplate {
            pre,
            info: TemplateInfo {
                from_cache,
                snapshot: false,
            },
        })
    }

    /// Runs a WASI command module once, in a fresh instance, to its end: `_start`
    /// returning or calling `proc_exit`. A trap, the deadline, fuel or memory ends it with
    /// the same errors as an invocation.
    pub async fn run_wasi(
        &self,
        template: &WasiTemplate,
        handler: Arc<dyn HostCallHandler>,
        run: &WasiRun,
    ) -> Result<WasiExit, InvocationError> {
        let limits = &self.inner.config.limits;
        let stdout = TailPipe::new(run.output_cap);
        let stderr = TailPipe::new(run.output_cap);
        let mut builder = WasiCtxBuilder::new();
        builder
            // A run's few small files in its own directory: file calls inline cost a third
            // of a hop to the blocking pool each. (Sleeps stay waits: see `poll_oneoff`.)
            .allow_blocking_current_thread(true)
            .args(&[&run.program])
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .preopened_dir(&run.work_dir, "/work", FsPerms::ReadWrite)
            .map_err(|e| InvocationError::Instantiate {
                message: format!("cannot mount {} at /work: {e:#}", run.work_dir.display()),
            })?;
        let mut store = self.store(handler, true)?;
        store.data_mut().wasi = Some(builder.build_p1());
        store.data_mut().http = Some(Box::new(super::wasi_http::HttpSession::new(
            run.http.clone(),
        )));
        let instance = match template.pre.instantiate_async(&mut store).await {
            Ok(i) => i,
            Err(e) => return Err(classify(e, store.data(), limits, Phase::Start, None)),
        };
        let start = instance
            .get_typed_func::<(), ()>(&mut store, "_start")
            .map_err(|e| InvocationError::Protocol {
                message: format!("`_start` is not a function of no arguments: {e}"),
            })?;
        // Epoch interruption stops wasm code at the deadline, but not a wait in a host
        // function (a sleep, a blocked read): the deadline covers the whole call too, and
        // dropping the call abandons the instance with its store.
        let call = tokio::time::timeout(limits.deadline, start.call_async(&mut store, ()));
        let Ok(result) = call.await else {
            return Err(InvocationError::DeadlineExceeded {
                limit: limits.deadline,
            });
        };
        let code = match result {
            Ok(()) => 0,
            Err(e) => match e.downcast_ref::<I32Exit>() {
                Some(exit) => exit.0,
                None => {
                    let err = classify(e, store.data(), limits, Phase::Call, None);
                    let tail = stderr.captured();
                    return Err(if tail.total > 0 {
                        InvocationError::WithStderr {
                            error: Box::new(err),
                            stderr: tail.text(),
                        }
                    } else {
                        err
                    });
                }
            },
        };
        Ok(WasiExit {
            code,
            stdout: stdout.captured(),
            stderr: stderr.captured(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tail_pipe_keeps_the_end() {
        let p = TailPipe::new(4);
        p.write(b"ab");
        p.write(b"cdef");
        p.write(b"g");
        let c = p.captured();
        assert_eq!(c.tail, b"defg");
        assert_eq!(c.total, 7);
        assert_eq!(c.text(), "[3 earlier bytes dropped] defg");
        let p = TailPipe::new(4);
        p.write(b"0123456789");
        assert_eq!(p.captured().tail, b"6789");
    }

    #[test]
    fn tells_commands_from_actors() {
        let command = wat::parse_str(
            r#"(module (import "wasi_snapshot_preview1" "proc_exit" (func (param i32)))
                 (memory (export "memory") 1) (func (export "_start")))"#,
        )
        .unwrap();
        assert!(is_wasi_command(&command));
        let actor = wat::parse_str(
            r#"(module (import "wasi_snapshot_preview1" "fd_write"
                   (func (param i32 i32 i32 i32) (result i32)))
                 (memory (export "memory") 1) (func (export "_start"))
                 (func (export "__guest_call") (param i32 i32) (result i32) i32.const 1))"#,
        )
        .unwrap();
        assert!(!is_wasi_command(&actor));
        assert!(!is_wasi_command(b"not wasm"));
    }
}
