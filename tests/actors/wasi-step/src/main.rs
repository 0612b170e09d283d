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
//! - `silent`: exits 0 without writing a result; `chatty`: prints a lot to stdout.

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
