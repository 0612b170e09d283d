//! `wasi_experimental_http` for WASI steps: the HTTP imports that modules written for the
//! Argo Wasm executor plugin are compiled against (the ABI of
//! `deislabs/wasi-experimental-http`), written here because no maintained crate serves it
//! on a current wasmtime.
//!
//! A request goes out only through the host's capability gate, exactly as an actor's
//! `wasmcloud:httpclient` call does (the module's claims must grant the capability and its
//! link's egress allowlist must allow the host), and only to hosts the run's grant lists
//! (a template's `permissions.http.allowed_hosts`) when it lists any. Unlike the plugin,
//! malformed input is an error code, never a host panic, and responses are bounded by the
//! response limit.

use std::collections::HashMap;

use sigil_actor::contracts::httpclient::{CONTRACT_ID, OP_REQUEST, Request};
use sigil_actor::contracts::httpserver::HttpResponse;
use wasmtime::{Caller, Linker};

use super::HostCall;
use super::abi::InvocationState;

/// The import module.
pub(super) const MODULE: &str = "wasi_experimental_http";
/// Its functions.
pub(super) const FUNCTIONS: [&str; 5] =
    ["req", "close", "body_read", "header_get", "headers_get_all"];

const OK: i32 = 0;
const INVALID_HANDLE: i32 = 1;
const MEMORY_NOT_FOUND: i32 = 2;
const MEMORY_ACCESS: i32 = 3;
const BUFFER_TOO_SMALL: i32 = 4;
const HEADER_NOT_FOUND: i32 = 5;
const UTF8: i32 = 6;
const DESTINATION_NOT_ALLOWED: i32 = 7;
const INVALID_METHOD: i32 = 8;
const INVALID_ENCODING: i32 = 9;
const INVALID_URL: i32 = 10;
const REQUEST_ERROR: i32 = 11;
const TOO_MANY_SESSIONS: i32 = 13;

/// What a run may reach over HTTP, beyond what its link allows.
#[derive(Debug, Clone, Default)]
pub struct HttpGrant {
    /// Hosts (as URLs, `https://example.com`) requests may go to; `None`: the link's
    /// allowlist alone decides.
    pub allowed_hosts: Option<Vec<String>>,
    /// Responses open at once (default 8, as the plugin).
    pub max_open: usize,
}

struct Response {
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    read: usize,
}

/// The HTTP state of one run.
pub(crate) struct HttpSession {
    grant: Option<HttpGrant>,
    responses: HashMap<u32, Response>,
    next: u32,
}

impl HttpSession {
    pub(crate) fn new(grant: Option<HttpGrant>) -> Self {
        HttpSession {
            grant,
            responses: HashMap::new(),
            next: 0,
        }
    }
}

fn memory(caller: &mut Caller<'_, InvocationState>) -> Option<wasmtime::Memory> {
    caller
        .get_export("memory")
        .and_then(wasmtime::Extern::into_memory)
}

fn read(
    caller: &mut Caller<'_, InvocationState>,
    mem: wasmtime::Memory,
    ptr: i32,
    len: i32,
) -> Result<Vec<u8>, i32> {
    let (Ok(ptr), Ok(len)) = (usize::try_from(ptr), usize::try_from(len)) else {
        return Err(BUFFER_TOO_SMALL);
    };
    let mut buf = vec![0u8; len];
    mem.read(&*caller, ptr, &mut buf)
        .map_err(|_| BUFFER_TOO_SMALL)?;
    Ok(buf)
}

fn write(
    caller: &mut Caller<'_, InvocationState>,
    mem: wasmtime::Memory,
    ptr: i32,
    bytes: &[u8],
) -> Result<(), i32> {
    let ptr = usize::try_from(ptr).map_err(|_| MEMORY_ACCESS)?;
    mem.write(&mut *caller, ptr, bytes)
        .map_err(|_| MEMORY_ACCESS)
}

fn text(bytes: Vec<u8>) -> Result<String, i32> {
    String::from_utf8(bytes).map_err(|_| UTF8)
}

/// Whether the run's grant lets a request go to `url`'s host: the host must equal the
/// host of one of the listed URLs (scheme, port and path are not compared, as in the
/// plugin).
fn granted(grant: Option<&HttpGrant>, url: &reqwest::Url) -> Result<(), i32> {
    let Some(list) = grant.and_then(|g| g.allowed_hosts.as_ref()) else {
        return Ok(());
    };
    let host = url.host_str().ok_or(INVALID_URL)?;
    for entry in list {
        let entry = reqwest::Url::parse(entry).map_err(|_| INVALID_URL)?;
        if entry
            .host_str()
            .is_some_and(|h| h.eq_ignore_ascii_case(host))
        {
            return Ok(());
        }
    }
    Err(DESTINATION_NOT_ALLOWED)
}

/// The header text format: `name:value` lines.
fn parse_headers(text: &str) -> Result<Vec<(String, String)>, i32> {
    text.lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (name, value) = l.split_once(':').ok_or(INVALID_ENCODING)?;
            let ok = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b));
            if !ok || value.bytes().any(|b| b.is_ascii_control() && b != b'\t') {
                return Err(INVALID_ENCODING);
            }
            Ok((name.to_ascii_lowercase(), value.to_string()))
        })
        .collect()
}

fn format_headers(headers: &[(String, String)]) -> String {
    headers
        .iter()
        .map(|(n, v)| format!("{}:{v}\n", n.to_ascii_lowercase()))
        .collect()
}

#[allow(clippy::too_many_arguments)]
async fn req(
    caller: &mut Caller<'_, InvocationState>,
    url: (i32, i32),
    method: (i32, i32),
    headers: (i32, i32),
    body: (i32, i32),
    status_ptr: i32,
    handle_ptr: i32,
) -> Result<i32, i32> {
    let mem = memory(caller).ok_or(MEMORY_NOT_FOUND)?;
    {
        let session = caller.data().http.as_ref();
        let open = session.map_or(0, |s| s.responses.len());
        let max = session
            .and_then(|s| s.grant.as_ref())
            .map_or(8, |g| g.max_open.max(1));
        if open >= max {
            return Err(TOO_MANY_SESSIONS);
        }
    }
    let url_text = text(read(caller, mem, url.0, url.1)?)?;
    let parsed = reqwest::Url::parse(&url_text).map_err(|_| INVALID_URL)?;
    if parsed.host_str().is_none() {
        return Err(INVALID_URL);
    }
    // A run with no grant has no HTTP at all.
    let grant = caller
        .data()
        .http
        .as_ref()
        .and_then(|s| s.grant.as_ref())
        .ok_or(DESTINATION_NOT_ALLOWED)?;
    granted(Some(grant), &parsed)?;
    let method = text(read(caller, mem, method.0, method.1)?)?;
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_alphabetic()) {
        return Err(INVALID_METHOD);
    }
    let body = read(caller, mem, body.0, body.1)?;
    let headers = parse_headers(&text(read(caller, mem, headers.0, headers.1)?)?)?;
    let mut request = Request::new(method.to_ascii_uppercase(), url_text);
    request.headers = headers;
    request.body = body;
    let payload = rmp_serde::to_vec_named(&request).map_err(|_| REQUEST_ERROR)?;
    let state = caller.data();
    let handler = state.handler.clone();
    let deadline = state.clock.instant_of(state.deadline_tick);
    let max_response = state.max_response;
    let answer = handler
        .host_call_async(HostCall {
            binding: "default",
            namespace: CONTRACT_ID,
            operation: OP_REQUEST,
            payload: &payload,
            deadline,
        })
        .await;
    let response: HttpResponse = match answer {
        Ok(bytes) => rmp_serde::from_slice(&bytes).map_err(|_| REQUEST_ERROR)?,
        Err(message) => {
            tracing::info!(target: "sigil::actor", url = %parsed, error = %message, "wasi_experimental_http request refused or failed");
            // The gate and the link's allowlist refuse with a message that says so.
            let lower = message.to_ascii_lowercase();
            return Err(
                if lower.contains("denied") || lower.contains("not allowed") {
                    DESTINATION_NOT_ALLOWED
                } else {
                    REQUEST_ERROR
                },
            );
        }
    };
    if response.body.len() > max_response {
        return Err(REQUEST_ERROR);
    }
    let session = caller
        .data_mut()
        .http
        .get_or_insert_with(|| Box::new(HttpSession::new(None)));
    let mut handle = session.next;
    while session.responses.contains_key(&handle) {
        handle = handle.wrapping_add(1);
    }
    session.next = handle.wrapping_add(1);
    session.responses.insert(
        handle,
        Response {
            headers: response.headers.clone(),
            body: response.body,
            read: 0,
        },
    );
    write(caller, mem, status_ptr, &response.status.to_le_bytes())?;
    write(caller, mem, handle_ptr, &handle.to_le_bytes())?;
    Ok(OK)
}

/// Something computed from the open response `handle`.
fn with_response<R>(
    caller: &Caller<'_, InvocationState>,
    handle: i32,
    f: impl FnOnce(&Response) -> Result<R, i32>,
) -> Result<R, i32> {
    let r = caller
        .data()
        .http
        .as_ref()
        .and_then(|s| s.responses.get(&(handle as u32)))
        .ok_or(INVALID_HANDLE)?;
    f(r)
}

/// Writes `bytes` to the guest's buffer of `buf_len` bytes at `buf`, and their length at
/// `written`; a buffer too small gets nothing.
fn answer(
    caller: &mut Caller<'_, InvocationState>,
    mem: wasmtime::Memory,
    (buf, buf_len, written): (i32, i32, i32),
    bytes: &[u8],
) -> Result<i32, i32> {
    if bytes.len() > usize::try_from(buf_len).unwrap_or(0) {
        return Err(BUFFER_TOO_SMALL);
    }
    write(caller, mem, buf, bytes)?;
    let n = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
    write(caller, mem, written, &n.to_le_bytes())?;
    Ok(OK)
}

fn code(result: Result<i32, i32>) -> i32 {
    result.unwrap_or_else(|e| e)
}

/// Adds the five functions to the WASI linker.
pub(super) fn add_to_linker(linker: &mut Linker<InvocationState>) -> wasmtime::Result<()> {
    linker.func_wrap_async(
        MODULE,
        "req",
        |mut caller: Caller<'_, InvocationState>,
         (u, ul, m, ml, h, hl, b, bl, status, handle): (
            i32,
            i32,
            i32,
            i32,
            i32,
            i32,
            i32,
            i32,
            i32,
            i32,
        )| {
            Box::new(async move {
                code(
                    req(
                        &mut caller,
                        (u, ul),
                        (m, ml),
                        (h, hl),
                        (b, bl),
                        status,
                        handle,
                    )
                    .await,
                )
            })
        },
    )?;
    linker.func_wrap(
        MODULE,
        "close",
        |mut caller: Caller<'_, InvocationState>, handle: i32| {
            if let Some(s) = caller.data_mut().http.as_mut() {
                s.responses.remove(&(handle as u32));
            }
            OK
        },
    )?;
    linker.func_wrap(
        MODULE,
        "body_read",
        |mut caller: Caller<'_, InvocationState>, handle: i32, buf: i32, len: i32, written: i32| {
            code((|| {
                let mem = memory(&mut caller).ok_or(MEMORY_NOT_FOUND)?;
                let len = usize::try_from(len).map_err(|_| BUFFER_TOO_SMALL)?;
                let chunk = {
                    let r = caller
                        .data_mut()
                        .http
                        .as_mut()
                        .and_then(|s| s.responses.get_mut(&(handle as u32)))
                        .ok_or(INVALID_HANDLE)?;
                    let end = (r.read + len).min(r.body.len());
                    let chunk = r.body[r.read..end].to_vec();
                    r.read = end;
                    chunk
                };
                write(&mut caller, mem, buf, &chunk)?;
                let n = u32::try_from(chunk.len()).unwrap_or(u32::MAX);
                write(&mut caller, mem, written, &n.to_le_bytes())?;
                Ok(OK)
            })())
        },
    )?;
    linker.func_wrap(
        MODULE,
        "header_get",
        |mut caller: Caller<'_, InvocationState>,
         handle: i32,
         name: i32,
         name_len: i32,
         buf: i32,
         buf_len: i32,
         written: i32| {
            code((|| {
                let mem = memory(&mut caller).ok_or(MEMORY_NOT_FOUND)?;
                let name = text(read(&mut caller, mem, name, name_len)?)?.to_ascii_lowercase();
                let value = with_response(&caller, handle, |r| {
                    r.headers
                        .iter()
                        .find(|(n, _)| n.eq_ignore_ascii_case(&name))
                        .map(|(_, v)| v.clone())
                        .ok_or(HEADER_NOT_FOUND)
                })?;
                answer(&mut caller, mem, (buf, buf_len, written), value.as_bytes())
            })())
        },
    )?;
    linker.func_wrap(
        MODULE,
        "headers_get_all",
        |mut caller: Caller<'_, InvocationState>,
         handle: i32,
         buf: i32,
         buf_len: i32,
         written: i32| {
            code((|| {
                let mem = memory(&mut caller).ok_or(MEMORY_NOT_FOUND)?;
                let all = with_response(&caller, handle, |r| Ok(format_headers(&r.headers)))?;
                answer(&mut caller, mem, (buf, buf_len, written), all.as_bytes())
            })())
        },
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_and_headers() {
        let url = reqwest::Url::parse("http://127.0.0.1:8080/x").unwrap();
        assert_eq!(granted(None, &url), Ok(()));
        let grant = |hosts: &[&str]| HttpGrant {
            allowed_hosts: Some(hosts.iter().map(|h| h.to_string()).collect()),
            max_open: 8,
        };
        assert_eq!(granted(Some(&grant(&["https://127.0.0.1"])), &url), Ok(()));
        assert_eq!(
            granted(Some(&grant(&["https://example.com"])), &url),
            Err(DESTINATION_NOT_ALLOWED)
        );
        assert_eq!(
            granted(Some(&grant(&[])), &url),
            Err(DESTINATION_NOT_ALLOWED)
        );
        assert_eq!(
            granted(Some(&grant(&["example.com"])), &url),
            Err(INVALID_URL)
        );
        assert_eq!(
            parse_headers("Content-Type:text/plain\nx-a: b\n").unwrap(),
            vec![
                ("content-type".to_string(), "text/plain".to_string()),
                ("x-a".to_string(), " b".to_string())
            ]
        );
        assert_eq!(parse_headers("no colon"), Err(INVALID_ENCODING));
        assert_eq!(parse_headers(""), Ok(vec![]));
        assert_eq!(
            format_headers(&[("A".into(), "1".into()), ("b".into(), "2".into())]),
            "a:1\nb:2\n"
        );
    }
}
