//! A WASI command module written to the Argo Wasm executor plugin's contract: it reads
//! `/work/input.json`, writes `/work/result.json` and exits. The parameter `mode` picks
//! what it does, so that the host's tests can drive every outcome:
//!
//! - `greet` (default): answers `greeting` = "Hello, NAME!" from the parameter `name`, and
//!   copies each input artifact to an output artifact of the same name (after sleeping
//!   `sleep_ms` milliseconds, when given);
//! - `fail`: reports phase `Failed`; `exit`: prints to stderr and exits with code 3;
//! - `trap`: traps; `loop`: never ends; `bomb`: allocates without end;
//! - `escape`, `env`, `socket`: try to read outside `/work`, read the environment, open a
//!   socket, and report what happened;
//! - `silent`: exits 0 without writing a result; `chatty`: prints a lot to stdout;
//! - `http`: fetches the parameter `url` through `wasi_experimental_http` and answers its
//!   `status`, `body` and `content_type`, or the ABI's error code as `error`.

use std::io::Write;

use serde_json::{Value, json};

fn param<'a>(input: &'a Value, name: &str) -> Option<&'a Value> {
    input["parameters"]
        .as_array()?
        .iter()
        .find(|p| p["name"] == name)
        .map(|p| &p["value"])
}

fn finish(phase: &str, message: &str, parameters: Value, artifacts: Value) {
    let result = json!({
        "phase": phase,
        "message": message,
        "outputs": { "parameters": parameters, "artifacts": artifacts },
    });
    if let Err(e) = std::fs::write("/work/result.json", result.to_string()) {
        eprintln!("cannot write the result: {e}");
        std::process::exit(1);
    }
}

fn main() {
    let input: Value = match std::fs::read("/work/input.json") {
        Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        Err(e) => {
            eprintln!("cannot read the input: {e}");
            std::process::exit(1);
        }
    };
    let mode = param(&input, "mode")
        .and_then(Value::as_str)
        .unwrap_or("greet");
    if let Some(ms) = param(&input, "sleep_ms").and_then(Value::as_u64) {
        std::thread::sleep(std::time::Duration::from_millis(ms));
    }
    match mode {
        "greet" => {
            let name = param(&input, "name")
                .and_then(Value::as_str)
                .unwrap_or("world");
            let mut artifacts = Vec::new();
            for a in input["artifacts"].as_array().into_iter().flatten() {
                let path = a["path"]
                    .as_str()
                    .unwrap_or_default()
                    .trim_start_matches('/');
                let from = format!("/work/artifacts-in/{path}");
                let to = format!("/work/artifacts-out/{path}");
                match std::fs::read(&from) {
                    Ok(bytes) => {
                        if let Some(parent) = std::path::Path::new(&to).parent() {
                            let _ = std::fs::create_dir_all(parent);
                        }
                        let _ = std::fs::write(&to, bytes);
                        artifacts.push(json!({ "name": a["name"], "path": a["path"] }));
                    }
                    Err(e) => eprintln!("no artifact at {from}: {e}"),
                }
            }
            let options = input["plugin_options"].as_array().map_or(0, Vec::len);
            finish(
                "Succeeded",
                &format!("greeted {name} ({options} options)"),
                json!([
                    { "name": "greeting", "value": format!("Hello, {name}!") },
                    { "name": "workflow", "value": input["workflow_name"] },
                ]),
                json!(artifacts),
            );
        }
        "fail" => finish("Failed", "the step failed on purpose", json!([]), json!([])),
        "exit" => {
            eprintln!("something went wrong");
            std::process::exit(3);
        }
        "trap" => std::process::abort(),
        "loop" => {
            let mut n: u64 = 0;
            loop {
                n = std::hint::black_box(n.wrapping_add(1));
            }
        }
        "bomb" => {
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                hoard.push(vec![1u8; 1 << 20]);
                std::hint::black_box(&hoard);
            }
        }
        "escape" | "env" | "socket" => {
            let seen = match mode {
                "escape" => {
                    let outside = std::fs::read("/etc/hostname").map(|_| "read".to_string());
                    let dotdot = std::fs::read("/work/../etc/hostname").map(|_| "read".to_string());
                    format!(
                        "outside: {}; dotdot: {}",
                        outside.unwrap_or_else(|e| e.to_string()),
                        dotdot.unwrap_or_else(|e| e.to_string())
                    )
                }
                "env" => format!(
                    "vars: {}; args: {:?}",
                    std::env::vars().count(),
                    std::env::args().collect::<Vec<_>>()
                ),
                _ => match std::net::TcpStream::connect("127.0.0.1:4222") {
                    Ok(_) => "connected".to_string(),
                    Err(e) => e.to_string(),
                },
            };
            finish(
                "Succeeded",
                "probed",
                json!([{ "name": "seen", "value": seen }]),
                json!([]),
            );
        }
        "http" => {
            let url = param(&input, "url")
                .and_then(Value::as_str)
                .unwrap_or_default();
            match fetch(url) {
                Ok((status, body, content_type)) => finish(
                    "Succeeded",
                    "fetched",
                    json!([
                        { "name": "status", "value": status },
                        { "name": "body", "value": body },
                        { "name": "content_type", "value": content_type },
                    ]),
                    json!([]),
                ),
                Err(code) => finish(
                    "Succeeded",
                    "refused",
                    json!([{ "name": "error", "value": code }]),
                    json!([]),
                ),
            }
        }
        "silent" => {}
        "chatty" => {
            let mut out = std::io::stdout().lock();
            let line = [b'.'; 4095];
            for _ in 0..64 {
                let _ = out.write_all(&line);
                let _ = out.write_all(b"\n");
            }
            finish("Succeeded", "talked", json!([]), json!([]));
        }
        other => finish(
            "Failed",
            &format!("unknown mode {other}"),
            json!([]),
            json!([]),
        ),
    }
}

#[cfg(target_os = "wasi")]
#[link(wasm_import_module = "wasi_experimental_http")]
unsafe extern "C" {
    fn req(
        url: *const u8,
        url_len: usize,
        method: *const u8,
        method_len: usize,
        headers: *const u8,
        headers_len: usize,
        body: *const u8,
        body_len: usize,
        status: *mut u16,
        handle: *mut u32,
    ) -> u32;
    fn body_read(handle: u32, buf: *mut u8, len: usize, read: *mut usize) -> u32;
    fn header_get(
        handle: u32,
        name: *const u8,
        name_len: usize,
        value: *mut u8,
        value_len: usize,
        written: *mut usize,
    ) -> u32;
    fn close(handle: u32) -> u32;
}

/// A GET of `url` through the host's `wasi_experimental_http`: (status, body, content type)
/// or the ABI's error code.
#[cfg(target_os = "wasi")]
fn fetch(url: &str) -> Result<(u16, String, String), u32> {
    let headers = "accept:text/plain\n";
    let (mut status, mut handle) = (0u16, 0u32);
    // SAFETY: every pointer and length describes a live buffer of this function.
    let code = unsafe {
        req(
            url.as_ptr(),
            url.len(),
            b"GET".as_ptr(),
            3,
            headers.as_ptr(),
            headers.len(),
            std::ptr::null(),
            0,
            &mut status,
            &mut handle,
        )
    };
    if code != 0 {
        return Err(code);
    }
    let mut body = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let mut n = 0usize;
        // SAFETY: `chunk` is a live buffer of its length; `n` a live usize.
        let code = unsafe { body_read(handle, chunk.as_mut_ptr(), chunk.len(), &mut n) };
        if code != 0 {
            return Err(code);
        }
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    let mut value = [0u8; 256];
    let mut written = 0usize;
    let name = "content-type";
    // SAFETY: as above.
    let code = unsafe {
        header_get(
            handle,
            name.as_ptr(),
            name.len(),
            value.as_mut_ptr(),
            value.len(),
            &mut written,
        )
    };
    let content_type = if code == 0 {
        String::from_utf8_lossy(&value[..written]).into_owned()
    } else {
        String::new()
    };
    // SAFETY: a handle this function received.
    unsafe { close(handle) };
    Ok((
        status,
        String::from_utf8_lossy(&body).into_owned(),
        content_type,
    ))
}

#[cfg(not(target_os = "wasi"))]
fn fetch(_url: &str) -> Result<(u16, String, String), u32> {
    Err(u32::MAX)
}
